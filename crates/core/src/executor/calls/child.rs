//! `start-child` and `await-child`: executions an execution starts (its
//! children) and waiting for their results. The child is created in the
//! commit that journals its start (its id and package), fenced by the
//! parent's epoch: it exists if and only if that entry does, so a replay
//! finds the same child. Its key (`child:<parent>:<seq>`) keeps it
//! created once.

use super::{CallOutcome, WasmResult, misfit, payload_result};
use crate::executor::Slot;
use crate::executor::guest::GuestData;
use crate::executor::invocation::Recorded;
use crate::executor::parse_payload;
use crate::executor::replay::Interrupt;
use crate::executor::state::ExecState;
use crate::journal::{
    AwaitChild, CallError, CallKind, ChildArgs, ChildHandle, ChildOptions, ChildStarted,
    DurableCall, ErrorKind, StartChild,
};
use crate::model::{NewExecution, PackageRecord, Status};
use crate::runtime::bindings::cerebelum::workflow::types as t;
use crate::store::SideWrite;
use serde_json::Value;
use std::sync::Arc;

/// `start-child`: starts the child (or finds the one a replayed call
/// started); its handle is the call's seq.
pub async fn start_child(
    data: &mut GuestData,
    workflow: String,
    input: String,
    options: Option<t::ChildOptions>,
) -> WasmResult<Result<u64, t::Error>> {
    data.settle().await?;
    let inv = data.invocation()?;
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
    // An engine error passed on with `?` interrupts the invocation
    // (`invocation::classify`).
    let (seq, id) = match matched.recorded {
        Recorded::Replayed { seq, call } => match Box::<StartChild>::from_call(call) {
            Some(start) => match start.child.clone() {
                Some(child) => (seq, replayed(&exec, seq, &start.args, child).await?),
                None => return Ok(Err(not_started(start.error).into())),
            },
            None => return Err(misfit(seq, CallKind::StartChild)),
        },
        Recorded::Live => {
            // Which package: journaled with the call, so a replay
            // starts the same one even if a newer version came since.
            let found = match open_room(&exec).await? {
                Ok(()) => child_package(&exec, &args).await?,
                Err(e) => Err(e),
            };
            let package = match found {
                Ok(package) => package,
                Err(e) => {
                    let start = StartChild {
                        args,
                        child: None,
                        error: Some(e.clone()),
                    };
                    let inv = data.invocation()?;
                    inv.push_call(matched.hash, Box::new(start).into(), |_| Vec::new())
                        .await
                        .map_err(wasmtime::Error::new)?;
                    // Durable before the code sees the error.
                    exec.writer.sync().await?;
                    return Ok(Err(e.into()));
                }
            };
            let child = ChildStarted {
                id: crate::util::new_id("ex"),
                package: package.name.clone(),
                version: package.version,
            };
            let new = child_execution(&exec, &child, &args, &package.sha256);
            let start = StartChild {
                args,
                child: Some(child),
                error: None,
            };
            // The child is created in the commit of its start (fenced by
            // this execution's epoch), claimed by this node if it has
            // room: it runs at once, and a replay finds it.
            let slot = Slot::reserve(&exec.engine, &new.id);
            let now = exec.engine.now_ms();
            let mut creation = slot.creation(&exec.engine, new, now);
            let mut record = creation.record(&package, now);
            let inv = data.invocation()?;
            let pushed = inv
                .push_call(matched.hash, Box::new(start).into(), |seq| {
                    record.idempotency_key = Some(child_key(&exec, seq));
                    creation.new.idempotency_key = record.idempotency_key.clone();
                    vec![SideWrite::CreateChild(Box::new(creation))]
                })
                .await;
            let seq = match pushed {
                Ok(seq) => seq,
                Err(e) => {
                    slot.release(&exec.engine);
                    return Err(wasmtime::Error::new(e));
                }
            };
            // Durable before the code holds the handle.
            if let Err(e) = exec.writer.sync().await {
                slot.release(&exec.engine);
                return Err(e.into());
            }
            let id = record.id.clone();
            exec.child_seen(&id, false);
            slot.start(&exec.engine, record);
            (seq, id)
        }
    };
    exec.children
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(seq, id);
    Ok(Ok(seq as u64))
}

/// The error of a `start-child` that started no child.
fn not_started(error: Option<CallError>) -> CallError {
    error.unwrap_or_else(|| CallError::new(ErrorKind::NotFound, "no child was started"))
}

/// The idempotency key of the child started by the call at `seq`.
fn child_key(exec: &ExecState, seq: i64) -> String {
    format!("child:{}:{seq}", exec.record.id)
}

/// The child `child` started with `args` (its package's hash `sha256`,
/// empty if not known: it is then found by name and version).
fn child_execution(
    exec: &ExecState,
    child: &ChildStarted,
    args: &ChildArgs,
    sha256: &str,
) -> NewExecution {
    let record = &exec.record;
    NewExecution {
        id: child.id.clone(),
        tenant: record.tenant.clone(),
        package_name: child.package.clone(),
        package_version: child.version,
        package_sha256: sha256.to_owned(),
        workflow: args.workflow.clone(),
        input: args.input.clone(),
        idempotency_key: None,
        worker_queue: record.worker_queue.clone(),
        continued_from: None,
        parent_id: Some(record.id.clone()),
        detached: args.options.as_ref().is_some_and(|o| o.detached),
    }
}

/// The child of a replayed `start-child` at `seq`: it exists (it was
/// created in the commit of the call), unless the journal comes from an
/// engine that created children after the call's commit and a crash came
/// between the two; it is then created pending, by name and version, for
/// any node to claim.
async fn replayed(
    exec: &ExecState,
    seq: i64,
    args: &ChildArgs,
    child: ChildStarted,
) -> WasmResult<String> {
    let store = &exec.engine.store;
    match store.executions().execution(&child.id).await {
        Ok(_) => return Ok(child.id),
        Err(crate::Error::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let mut new = child_execution(exec, &child, args, "");
    new.idempotency_key = Some(child_key(exec, seq));
    let created = store
        .create_execution(new, exec.engine.now_ms(), None)
        .await?;
    Ok(created.id)
}

/// `await-child`: waits for the child started at `handle`.
pub async fn await_child(
    data: &mut GuestData,
    handle: u64,
) -> WasmResult<Result<String, t::Error>> {
    let args = ChildHandle { handle };
    let (seq, _) = data
        .call(args, |_, args| (AwaitChild { args }, Vec::new()))
        .await?;
    let inv = data.invocation()?;
    let exec = inv.exec.clone();
    let caller = inv.id.clone();
    let interruptible = inv.is_workflow();
    let child = exec
        .children
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(handle as i64))
        .cloned();
    let began = data.sandbox.wait_on_guests_begin();
    let outcome = wait(exec, caller, seq, handle, child, interruptible).await;
    data.sandbox.wait_end(began).await;
    payload_result(outcome)
}

/// Waits for the child started at `handle` (execution `child`) to end,
/// following it through its continue-as-new runs: the result of the call
/// at `seq` is the child's result or error.
pub async fn wait(
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
    // How long the code may wait in process for a child this node drives.
    let until = tokio::time::Instant::now() + exec.engine.config.hibernate_after;
    loop {
        // Subscribed before the child is read: an end committed after the
        // read is then in `ended` (see `driven_here`).
        let ended = exec.engine.finished.subscribe();
        let child = executions.executions().execution(&id).await?;
        exec.child_seen(&id, child.status.is_terminal());
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
                    exec.child_continued(&id, &run.id);
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
            _ => match driven_here(&exec, &id, ended, until, interruptible).await {
                // It ended or left this node: read it again.
                Here::Left => continue,
                Here::Cancelled => return exec.end_cancelled(&caller, seq, Vec::new()).await,
                Here::No => {
                    // Its end wakes this execution (`SideWrite::WakeParent`).
                    exec.writer.sync().await?;
                    return Err(Interrupt::Suspend { wake_at: None });
                }
            },
        };
        // Not durable: the child's row holds it.
        return exec.resolve(&caller, seq, result, false, Vec::new()).await;
    }
}

/// How a wait in process for a child ended.
enum Here {
    /// The child ended, or this node no longer drives it (it hibernated).
    Left,
    /// A cancellation came for the waiting workflow code.
    Cancelled,
    /// This node does not drive the child, or the wait was long enough:
    /// the parent hibernates, and the child's end wakes it.
    No,
}

/// Waits in process, until `until`, while this node drives the child `id`
/// (as it does a child it started when it had room): a child that ends
/// soon then costs the parent no hibernation, claim and replay. `ended`
/// was subscribed before the caller read the child running.
async fn driven_here(
    exec: &ExecState,
    id: &str,
    mut ended: tokio::sync::broadcast::Receiver<String>,
    until: tokio::time::Instant,
    interruptible: bool,
) -> Here {
    let inner = &exec.engine;
    let here = || {
        inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    };
    if !here() {
        // A node announces an end before it stops driving the execution:
        // a child that ended since the caller's read is in `ended` (read
        // it again); else this node does not drive it.
        return if ended_since(&mut ended, id) {
            Here::Left
        } else {
            Here::No
        };
    }
    if tokio::time::Instant::now() >= until {
        return Here::No;
    }
    loop {
        if interruptible && exec.cancel.pending() {
            return Here::Cancelled;
        }
        let notified = exec.cancel.notify.notified();
        tokio::select! {
            got = ended.recv() => match got {
                Ok(done) if done == id => return Here::Left,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Here::No,
            },
            _ = notified, if interruptible => {}
            // A child that hibernates sends no end: look again now and then.
            _ = tokio::time::sleep(CHILD_LOOK) => {}
            _ = tokio::time::sleep_until(until) => return Here::No,
        }
        if !here() {
            return Here::Left;
        }
    }
}

/// Whether `ended` holds the end of execution `id` (or lost count: look
/// again).
fn ended_since(ended: &mut tokio::sync::broadcast::Receiver<String>, id: &str) -> bool {
    use tokio::sync::broadcast::error::TryRecvError;
    loop {
        match ended.try_recv() {
            Ok(done) if done == id => return true,
            Ok(_) => {}
            Err(TryRecvError::Lagged(_)) => return true,
            Err(TryRecvError::Empty | TryRecvError::Closed) => return false,
        }
    }
}

/// How often a parent waiting in process looks whether its child still
/// runs here (a child that hibernates sends no end).
const CHILD_LOOK: std::time::Duration = std::time::Duration::from_millis(20);

/// Whether the tenant may have one more open execution (its
/// `max_open_executions`), as a start through the API checks.
async fn open_room(exec: &ExecState) -> WasmResult<Result<(), CallError>> {
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
    exec: &ExecState,
    args: &ChildArgs,
) -> WasmResult<Result<PackageRecord, CallError>> {
    let record = &exec.record;
    let options = args.options.clone().unwrap_or_default();
    let found = match &options.package {
        None => Ok(exec.own_package()),
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
