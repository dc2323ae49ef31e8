//! `cerebelum:workflow/host`: every import is matched against the journal
//! (replay) or journaled (live) before it has any effect.

use super::calls::{self, CallOutcome, PollPlan, Wait};
use super::guest::GuestData;
use super::invocation::{Invocation, Recorded};
use super::parse_payload;
use super::replay::Interrupt;
use crate::journal::{
    Answered, ApprovalArgs, AwaitApproval, AwaitChild, AwaitSignal, AwaitSteps, Call, CallError,
    CallKind, ChildArgs, ChildHandle, ChildOptions, ChildStarted, ContinueArgs, Decided, ErrorKind,
    Handles, LogLine, NoArgs, Poll, PollArgs, PollOptions, Progress, Received, RecordName,
    SignalArgs, Sleep, SleepArgs, StartChild, StateArgs, StepArgs, StepCall,
};
use crate::model::{NewExecution, PackageRecord, StepOptions};
use crate::runtime::bindings::cerebelum::workflow::host::{Host, StepHandle};
use crate::runtime::bindings::cerebelum::workflow::types as t;
use crate::store::SideWrite;
use serde::Serialize;
use serde_json::{Value, json};

impl t::Host for GuestData {}

type WasmResult<T> = wasmtime::Result<T>;

fn to_wasm(outcome: CallOutcome) -> WasmResult<Result<Value, t::Error>> {
    match outcome {
        Ok(r) => Ok(r.map_err(Into::into)),
        Err(interrupt) => Err(wasmtime::Error::new(interrupt)),
    }
}

fn payload_result(outcome: CallOutcome) -> WasmResult<Result<String, t::Error>> {
    to_wasm(outcome).map(|r| r.map(|v| v.to_string()))
}

/// A recorded call of the right kind that does not hold what its kind
/// holds (a modified journal).
fn misfit(seq: i64, kind: CallKind) -> wasmtime::Error {
    wasmtime::Error::new(Interrupt::Nondeterminism(format!(
        "journal entry {seq} does not hold a {kind} call; the journal was modified"
    )))
}

impl GuestData {
    fn invocation(&mut self) -> WasmResult<&mut Invocation> {
        self.host.as_mut().ok_or_else(|| {
            wasmtime::Error::msg("host calls are not available while describing a package")
        })
    }

    /// Waits until HTTP requests made before this call are journaled, so
    /// journal entries stay in call order (see `executor::http`).
    /// Also where a tenant over its journal rate waits (while other
    /// tenants have work on the node), giving its core and its place to
    /// others meanwhile.
    async fn settle(&mut self) -> WasmResult<()> {
        self.http.settle().await.map_err(wasmtime::Error::new)?;
        for entry in self.new_output() {
            let exec = &self.invocation()?.exec;
            exec.writer
                .push(entry)
                .await
                .map_err(wasmtime::Error::new)?;
        }
        let exec = &self.invocation()?.exec;
        // The rate applies while other tenants have work on the node.
        let pause = match &exec.sandbox.journal_rate {
            Some(limit) if exec.engine.runtime.cpu().contended() => limit.take(),
            _ => return Ok(()),
        };
        if !pause.is_zero() {
            let began = self.sandbox.wait_begin();
            tokio::time::sleep(pause).await;
            self.sandbox.wait_end(began).await;
        }
        Ok(())
    }

    /// The call of `kind` with `args`: the recorded one (and its seq), or,
    /// live, the one `live` makes of the arguments (with side writes
    /// committed atomically with it), newly journaled.
    async fn call<A: Serialize>(
        &mut self,
        kind: CallKind,
        args: A,
        live: impl FnOnce(&Invocation, A) -> (Call, Vec<SideWrite>),
    ) -> WasmResult<(i64, Call)> {
        self.settle().await?;
        let inv = self.invocation()?;
        let matched = inv.record(kind, &args).map_err(wasmtime::Error::new)?;
        match matched.recorded {
            Recorded::Replayed { seq, call } => Ok((seq, call)),
            Recorded::Live => {
                let (call, side) = live(inv, args);
                let seq = inv
                    .push_call(matched.hash, call.clone(), side)
                    .await
                    .map_err(wasmtime::Error::new)?;
                Ok((seq, call))
            }
        }
    }

    async fn immediate<A: Serialize, T: Clone>(
        &mut self,
        kind: CallKind,
        args: A,
        live: impl FnOnce(&Invocation) -> T,
        wrap: fn(Answered<A, T>) -> Call,
        answer: fn(Call) -> Option<T>,
    ) -> WasmResult<T> {
        self.settle().await?;
        self.invocation()?
            .immediate(kind, args, live, wrap, answer)
            .await
            .map_err(wasmtime::Error::new)
    }

    /// `call-step` / `start-step`: the journaled call's seq, with the step
    /// and its input and options.
    async fn step_call(
        &mut self,
        kind: CallKind,
        step: String,
        input: String,
        options: Option<t::StepOptions>,
    ) -> WasmResult<(i64, StepArgs)> {
        check_input(self.invocation()?, &step, &input)?;
        let args = StepArgs {
            step,
            input: parse_payload(&input),
            options: options.map(StepOptions::from),
        };
        let (seq, call) = self
            .call(kind, args, |_, args| {
                let call = StepCall { args };
                let call = match kind {
                    CallKind::StartStep => Call::StartStep(call),
                    _ => Call::CallStep(call),
                };
                (call, Vec::new())
            })
            .await?;
        match call {
            Call::CallStep(c) | Call::StartStep(c) => Ok((seq, c.args)),
            _ => Err(misfit(seq, kind)),
        }
    }
}

/// Stops the execution if a step's input is larger than the tenant allows
/// (before it is journaled).
fn check_input(inv: &Invocation, step: &str, input: &str) -> WasmResult<()> {
    inv.exec
        .check_payload(&format!("the input of step '{step}'"), input.len())
        .map_err(|e| {
            wasmtime::Error::new(Interrupt::Limit {
                kind: ErrorKind::Payload,
                message: e.message,
            })
        })
}

impl Host for GuestData {
    async fn call_step(
        &mut self,
        step: String,
        input: String,
        options: Option<t::StepOptions>,
    ) -> WasmResult<Result<String, t::Error>> {
        let (seq, args) = self
            .step_call(CallKind::CallStep, step, input.clone(), options)
            .await?;
        let began = self.sandbox.wait_on_guests_begin();
        let inv = self.invocation()?;
        let outcome = calls::step_call(
            inv.exec.clone(),
            inv.id.clone(),
            seq,
            args.step,
            input,
            args.options,
            inv.is_workflow(),
        )
        .await;
        self.sandbox.wait_end(began).await;
        payload_result(outcome)
    }

    async fn start_step(
        &mut self,
        step: String,
        input: String,
        options: Option<t::StepOptions>,
    ) -> WasmResult<StepHandle> {
        let (seq, args) = self
            .step_call(CallKind::StartStep, step, input.clone(), options)
            .await?;
        let inv = self.invocation()?;
        if inv.exec.recorded_result(seq).is_none() {
            // The step runs beside the workflow, in its span.
            let task = tokio::spawn(tracing::Instrument::in_current_span(calls::step_call(
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

    async fn await_steps(
        &mut self,
        handles: Vec<StepHandle>,
    ) -> WasmResult<Vec<Result<String, t::Error>>> {
        let args = Handles {
            handles: handles.clone(),
        };
        self.call(CallKind::AwaitSteps, args, |_, args| {
            (Call::AwaitSteps(AwaitSteps { args }), Vec::new())
        })
        .await?;
        let began = self.sandbox.wait_on_guests_begin();
        let exec = self.invocation()?.exec.clone();
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
        self.sandbox.wait_end(began).await;
        if let Some(wake_at) = suspend {
            return Err(wasmtime::Error::new(Interrupt::Suspend { wake_at }));
        }
        Ok(results)
    }

    async fn sleep(&mut self, duration_ms: u64) -> WasmResult<Result<(), t::Error>> {
        let (seq, call) = self
            .call(CallKind::Sleep, SleepArgs { duration_ms }, |inv, args| {
                let due_at = inv.exec.engine.now_ms() + duration_ms as i64;
                (Call::Sleep(Sleep { args, due_at }), Vec::new())
            })
            .await?;
        let Call::Sleep(sleep) = call else {
            return Err(misfit(seq, CallKind::Sleep));
        };
        let began = self.sandbox.wait_begin();
        let inv = self.invocation()?;
        let exec = inv.exec.clone();
        let (caller, interruptible) = (inv.id.clone(), inv.is_workflow());
        let outcome = match exec.recorded_result(seq) {
            Some(r) => Ok(r),
            None => {
                let due = sleep.due_at;
                match exec.wait_until(due, interruptible).await {
                    Wait::Elapsed => {
                        exec.resolve(&caller, seq, Ok(Value::Null), false, Vec::new())
                            .await
                    }
                    Wait::Cancelled => exec
                        .deliver_cancel(&caller, seq, true, Vec::new())
                        .await
                        .unwrap_or_else(|| Ok(Err(CallError::cancelled()))),
                    Wait::Hibernate => Err(Interrupt::Suspend { wake_at: Some(due) }),
                }
            }
        };
        self.sandbox.wait_end(began).await;
        to_wasm(outcome).map(|r| r.map(|_| ()))
    }

    async fn poll(
        &mut self,
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
        let (seq, call) = self
            .call(CallKind::Poll, args, |inv, args| {
                let started_at = inv.exec.engine.now_ms();
                (Call::Poll(Poll { args, started_at }), Vec::new())
            })
            .await?;
        let Call::Poll(poll) = call else {
            return Err(misfit(seq, CallKind::Poll));
        };
        let plan = PollPlan {
            interval_ms: poll.args.options.interval_ms,
            max_attempts: poll.args.options.max_attempts.max(1),
            deadline_ms: poll
                .args
                .options
                .timeout_ms
                .map(|t| poll.started_at + t as i64),
        };
        let began = self.sandbox.wait_on_guests_begin();
        let inv = self.invocation()?;
        let outcome = calls::poll_call(
            inv.exec.clone(),
            inv.id.clone(),
            seq,
            poll.args.check_step,
            input,
            plan,
            inv.is_workflow(),
        )
        .await;
        self.sandbox.wait_end(began).await;
        payload_result(outcome)
    }

    async fn await_approval(
        &mut self,
        request: t::ApprovalRequest,
    ) -> WasmResult<Result<t::ApprovalDecision, t::Error>> {
        let args = ApprovalArgs {
            key: request.key,
            message: request.message,
            details: request.details.as_deref().map(parse_payload),
            timeout_ms: request.timeout_ms,
        };
        let (seq, call) = self
            .call(CallKind::AwaitApproval, args, |inv, args| {
                let due_at = args.timeout_ms.map(|t| inv.exec.engine.now_ms() + t as i64);
                // The side table keeps the request with its due time.
                let mut stored = serde_json::to_value(&args).unwrap_or(Value::Null);
                stored["due_at"] = json!(due_at);
                let open = SideWrite::OpenApproval {
                    key: args.key.clone(),
                    request: stored,
                };
                (
                    Call::AwaitApproval(AwaitApproval { args, due_at }),
                    vec![open],
                )
            })
            .await?;
        let Call::AwaitApproval(approval) = call else {
            return Err(misfit(seq, CallKind::AwaitApproval));
        };
        let began = self.sandbox.wait_begin();
        let inv = self.invocation()?;
        let outcome = calls::approval_call(
            inv.exec.clone(),
            inv.id.clone(),
            seq,
            approval.args.key,
            approval.due_at,
            inv.is_workflow(),
        )
        .await;
        self.sandbox.wait_end(began).await;
        to_wasm(outcome).map(|r| {
            r.map(|v| match Decided::from_value(&v) {
                Decided::Approved(payload) => t::ApprovalDecision::Approved(payload.to_string()),
                Decided::Rejected(reason) => t::ApprovalDecision::Rejected(reason),
                Decided::TimedOut => t::ApprovalDecision::TimedOut,
            })
        })
    }

    async fn await_signal(
        &mut self,
        name: String,
        timeout_ms: Option<u64>,
    ) -> WasmResult<Result<Option<String>, t::Error>> {
        let args = SignalArgs { name, timeout_ms };
        let (seq, call) = self
            .call(CallKind::AwaitSignal, args, |inv, args| {
                let due_at = args.timeout_ms.map(|t| inv.exec.engine.now_ms() + t as i64);
                (Call::AwaitSignal(AwaitSignal { args, due_at }), Vec::new())
            })
            .await?;
        let Call::AwaitSignal(wait) = call else {
            return Err(misfit(seq, CallKind::AwaitSignal));
        };
        let began = self.sandbox.wait_begin();
        let inv = self.invocation()?;
        let outcome = calls::signal_call(
            inv.exec.clone(),
            inv.id.clone(),
            seq,
            wait.args.name,
            wait.due_at,
            inv.is_workflow(),
        )
        .await;
        self.sandbox.wait_end(began).await;
        to_wasm(outcome).map(|r| {
            r.map(|v| match Received::from_value(&v) {
                Received::Signal(payload) => Some(payload.to_string()),
                Received::TimedOut => None,
            })
        })
    }

    async fn set_state(&mut self, state: String) -> WasmResult<Result<(), t::Error>> {
        let inv = self.invocation()?;
        if let Err(e) = inv.exec.check_payload("the state", state.len()) {
            return Ok(Err(e.into()));
        }
        // Secrets in it are redacted where the journal is written.
        let args = StateArgs {
            state: parse_payload(&state),
        };
        self.immediate(
            CallKind::SetState,
            args,
            |_| Value::Null,
            Call::SetState,
            |c| match c {
                Call::SetState(a) => Some(a.answer),
                _ => None,
            },
        )
        .await
        .map(|_| Ok(()))
    }

    async fn start_child(
        &mut self,
        workflow: String,
        input: String,
        options: Option<t::ChildOptions>,
    ) -> WasmResult<Result<u64, t::Error>> {
        self.settle().await?;
        let inv = self.invocation()?;
        if let Err(e) = inv.exec.check_payload("the child's input", input.len()) {
            return Ok(Err(e.into()));
        }
        let args = ChildArgs {
            workflow,
            input: parse_payload(&input),
            options: options.map(|o| ChildOptions {
                package: o.package_name,
                version: o.version,
                detached: o.detached,
            }),
        };
        let matched = inv
            .record(CallKind::StartChild, &args)
            .map_err(wasmtime::Error::new)?;
        let exec = inv.exec.clone();
        let (seq, start, replayed) = match matched.recorded {
            Recorded::Replayed {
                seq,
                call: Call::StartChild(start),
            } => (seq, *start, true),
            Recorded::Replayed { seq, .. } => return Err(misfit(seq, CallKind::StartChild)),
            Recorded::Live => {
                // Which package: journaled with the call, so a replay
                // starts the same one even if a newer version came since.
                let found = match open_room(&exec).await? {
                    Ok(()) => child_package(&exec, &args).await?,
                    Err(e) => Err(e),
                };
                let (child, error) = match found {
                    Ok(package) => (
                        Some(ChildStarted {
                            id: crate::util::new_id("ex"),
                            package: package.name,
                            version: package.version,
                        }),
                        None,
                    ),
                    Err(e) => (None, Some(e)),
                };
                let start = StartChild { args, child, error };
                let inv = self.invocation()?;
                let seq = inv
                    .push_call(
                        matched.hash,
                        Call::StartChild(Box::new(start.clone())),
                        Vec::new(),
                    )
                    .await
                    .map_err(wasmtime::Error::new)?;
                // Durable before the child exists: a replay finds the id.
                exec.writer.sync().await.map_err(wasmtime::Error::new)?;
                (seq, start, false)
            }
        };
        let Some(child) = start.child else {
            let error = start
                .error
                .unwrap_or_else(|| CallError::new(ErrorKind::NotFound, "no child was started"));
            return Ok(Err(error.into()));
        };
        let store = &exec.engine.store;
        let infra = |e| wasmtime::Error::new(Interrupt::from(e));
        // A replay reads whether it exists (it does, unless a crash came
        // between the journal and the creation) instead of writing again.
        let exists = replayed
            && match store.executions().execution(&child.id).await {
                Ok(_) => true,
                Err(crate::Error::NotFound(_)) => false,
                Err(e) => return Err(infra(e)),
            };
        let id = if exists {
            child.id
        } else {
            // Idempotent by its key, `child:<parent>:<seq>`.
            let record = &exec.record;
            let new = NewExecution {
                id: child.id,
                tenant: record.tenant.clone(),
                package_name: child.package,
                package_version: child.version,
                package_sha256: String::new(),
                workflow: start.args.workflow,
                input: start.args.input,
                idempotency_key: Some(format!("child:{}:{seq}", record.id)),
                worker_queue: record.worker_queue.clone(),
                continued_from: None,
                parent_id: Some(record.id.clone()),
                detached: start.args.options.is_some_and(|o| o.detached),
            };
            store
                .create_execution(new, exec.engine.now_ms(), None)
                .await
                .map_err(infra)?
                .id
        };
        exec.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(seq, id);
        Ok(Ok(seq as u64))
    }

    async fn await_child(&mut self, handle: u64) -> WasmResult<Result<String, t::Error>> {
        let args = ChildHandle { handle };
        let (seq, _) = self
            .call(CallKind::AwaitChild, args, |_, args| {
                (Call::AwaitChild(AwaitChild { args }), Vec::new())
            })
            .await?;
        let inv = self.invocation()?;
        let exec = inv.exec.clone();
        let caller = inv.id.clone();
        let interruptible = inv.is_workflow();
        let child = exec
            .children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(handle as i64))
            .cloned();
        let began = self.sandbox.wait_on_guests_begin();
        let outcome = calls::child_call(exec, caller, seq, handle, child, interruptible).await;
        self.sandbox.wait_end(began).await;
        payload_result(outcome)
    }

    async fn continue_as_new(&mut self, input: String) -> WasmResult<t::Error> {
        let inv = self.invocation()?;
        if !inv.is_workflow() {
            return Ok(CallError::new(
                ErrorKind::Denied,
                "continue-as-new is for workflow code; a step returns its result and the \
                 workflow decides to continue",
            )
            .into());
        }
        if let Err(e) = inv
            .exec
            .check_payload("the input of continue-as-new", input.len())
        {
            return Ok(e.into());
        }
        let args = ContinueArgs {
            input: parse_payload(&input),
        };
        let input = args.input.clone();
        let next = self
            .immediate(
                CallKind::ContinueAsNew,
                args,
                |_| crate::util::new_id("ex"),
                Call::ContinueAsNew,
                |c| match c {
                    Call::ContinueAsNew(a) => Some(a.answer),
                    _ => None,
                },
            )
            .await?;
        let exec = self.invocation()?.exec.clone();
        // The call (with the new id) is durable before the execution
        // exists; the creation is idempotent by its key, so a replay after
        // a crash finds the same one.
        exec.writer.sync().await.map_err(wasmtime::Error::new)?;
        let record = &exec.record;
        let new = NewExecution {
            id: next,
            tenant: record.tenant.clone(),
            package_name: record.package_name.clone(),
            package_version: record.package_version,
            package_sha256: record.package_sha256.clone(),
            workflow: record.workflow.clone(),
            input,
            idempotency_key: Some(format!("continue:{}", record.id)),
            worker_queue: record.worker_queue.clone(),
            continued_from: Some(record.id.clone()),
            // A child's next run is its parent's child still.
            parent_id: record.parent_id.clone(),
            detached: record.detached,
        };
        let created = exec
            .engine
            .store
            .create_execution(new, exec.engine.now_ms(), None)
            .await
            .map_err(|e| wasmtime::Error::new(Interrupt::from(e)))?;
        tracing::info!(next = %created.id, "continued as a new execution");
        Err(wasmtime::Error::new(Interrupt::ContinueAsNew {
            next: created.id,
        }))
    }

    async fn report_progress(&mut self, percent: u8, message: String) -> WasmResult<()> {
        let args = Progress {
            percent: percent.min(100),
            message,
        };
        self.immediate(
            CallKind::ReportProgress,
            args,
            |_| Value::Null,
            Call::ReportProgress,
            |c| match c {
                Call::ReportProgress(a) => Some(a.answer),
                _ => None,
            },
        )
        .await
        .map(|_| ())
    }

    async fn log(&mut self, level: t::LogLevel, message: String) -> WasmResult<()> {
        let level = match level {
            t::LogLevel::Trace => "trace",
            t::LogLevel::Debug => "debug",
            t::LogLevel::Info => "info",
            t::LogLevel::Warn => "warn",
            t::LogLevel::Error => "error",
        };
        let args = LogLine {
            level: level.to_owned(),
            message: message.clone(),
        };
        self.immediate(
            CallKind::Log,
            args,
            |inv| {
                let message = inv.exec.sandbox.redact(&message);
                tracing::info!(execution_id = %inv.exec.record.id, invocation = %inv.id, level, "{message}");
                Value::Null
            },
            Call::Log,
            |c| match c {
                Call::Log(a) => Some(a.answer),
                _ => None,
            },
        )
        .await
        .map(|_| ())
    }

    async fn now_ms(&mut self) -> WasmResult<u64> {
        self.immediate(
            CallKind::NowMs,
            NoArgs {},
            |inv| inv.exec.engine.now_ms().max(0) as u64,
            Call::NowMs,
            |c| match c {
                Call::NowMs(a) => Some(a.answer),
                _ => None,
            },
        )
        .await
    }

    async fn random_u64(&mut self) -> WasmResult<u64> {
        self.immediate(
            CallKind::RandomU64,
            NoArgs {},
            |_| {
                use std::hash::{BuildHasher, Hasher};
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u8(0);
                h.finish()
            },
            Call::RandomU64,
            |c| match c {
                Call::RandomU64(a) => Some(a.answer),
                _ => None,
            },
        )
        .await
    }

    async fn execution_id(&mut self) -> WasmResult<String> {
        let id = self.invocation()?.exec.record.id.clone();
        Ok(id)
    }

    async fn attempt(&mut self) -> WasmResult<u32> {
        Ok(self.invocation()?.attempt)
    }

    async fn recall(&mut self, name: String) -> WasmResult<Option<String>> {
        self.settle().await?;
        let recorded = self
            .invocation()?
            .recall(CallKind::Record, &RecordName { name });
        Ok(match recorded {
            Some(Call::Record(a)) => Some(a.answer.to_string()),
            _ => None,
        })
    }

    async fn remember(&mut self, name: String, value: String) -> WasmResult<()> {
        // A recorded value is replayed by `recall`; reaching `remember` for a
        // recorded entry means the code did not call `recall` first, and
        // the journal answer wins, as for every other call.
        let value = parse_payload(&value);
        self.immediate(
            CallKind::Record,
            RecordName { name },
            |_| value,
            Call::Record,
            |c| match c {
                Call::Record(a) => Some(a.answer),
                _ => None,
            },
        )
        .await
        .map(|_| ())
    }

    async fn secret(&mut self, name: String) -> WasmResult<Result<String, t::Error>> {
        let inv = self.invocation()?;
        if inv.is_workflow() {
            return Ok(Err(CallError::new(
                ErrorKind::Denied,
                "workflow code cannot read secrets; read them in a step",
            )
            .into()));
        }
        let sandbox = &inv.exec.sandbox;
        Ok(match sandbox.secret(&name) {
            Some(value) => Ok(value.to_owned()),
            None => {
                let known: Vec<&str> = sandbox.secrets.iter().map(|(n, _)| n.as_str()).collect();
                Err(CallError::new(
                    ErrorKind::NotFound,
                    format!(
                        "tenant '{}' has no secret named '{name}' (it has: {}); set it with \
                         `cerebelum admin secret set {} {name}`",
                        sandbox.name,
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        },
                        sandbox.name
                    ),
                )
                .into())
            }
        })
    }
}

/// Whether the tenant may have one more open execution (its
/// `max_open_executions`), as a start through the API checks.
async fn open_room(exec: &super::state::ExecState) -> WasmResult<Result<(), CallError>> {
    let Some(limit) = exec.sandbox.quotas.max_open_executions else {
        return Ok(Ok(()));
    };
    let open = exec
        .engine
        .store
        .executions()
        .count_open_executions(&exec.record.tenant)
        .await
        .map_err(|e| wasmtime::Error::new(Interrupt::from(e)))?;
    if open < limit {
        return Ok(Ok(()));
    }
    Ok(Err(CallError::new(
        ErrorKind::Quota,
        format!(
            "tenant '{}' has {open} open executions and may have at most {limit} (max open \
             executions): no child was started",
            exec.record.tenant
        ),
    )))
}

/// The package a `start-child` names (this execution's version when it
/// names none), if it has the workflow; else the error the call answers.
async fn child_package(
    exec: &super::state::ExecState,
    args: &ChildArgs,
) -> WasmResult<Result<PackageRecord, CallError>> {
    let record = &exec.record;
    let options = args.options.clone().unwrap_or_default();
    let found = match &options.package {
        None => Ok(PackageRecord {
            tenant: record.tenant.clone(),
            sha256: record.package_sha256.clone(),
            name: record.package_name.clone(),
            version: record.package_version,
            info: exec.package.info.clone(),
            created_at_ms: 0,
            size_bytes: 0,
        }),
        Some(name) => {
            exec.engine
                .store
                .catalog()
                .find_package(&record.tenant, name, options.version.map(|v| v as i64))
                .await
        }
    };
    let package = match found {
        Ok(package) => package,
        Err(crate::Error::NotFound(message)) => {
            return Ok(Err(CallError::new(ErrorKind::NotFound, message)));
        }
        Err(e) => return Err(wasmtime::Error::new(Interrupt::from(e))),
    };
    Ok(match package.info.check_workflow(&args.workflow) {
        Ok(()) => Ok(package),
        Err(e) => Err(CallError::new(
            ErrorKind::NotFound,
            format!("child workflow of package '{}': {e}", package.name),
        )),
    })
}
