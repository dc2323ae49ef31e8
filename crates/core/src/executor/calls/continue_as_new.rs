//! `continue-as-new`: ends this execution; a new one of the same workflow
//! (a fresh journal) continues it with a new input. The new id is
//! journaled durably before the execution is created, idempotently by its
//! key, so a replay after a crash finds the same one.

use super::WasmResult;
use crate::executor::create;
use crate::executor::guest::GuestData;
use crate::executor::parse_payload;
use crate::executor::replay::Interrupt;
use crate::journal::{CallError, ContinueArgs, ContinueAsNew, ErrorKind};
use crate::model::NewExecution;
use crate::runtime::bindings::cerebelum::workflow::types as t;

/// `continue-as-new`: never returns to the code (its error is what the
/// code gets when it may not continue).
pub async fn continue_as_new(data: &mut GuestData, input: String) -> WasmResult<t::Error> {
    let inv = data.invocation()?;
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
    let next = data
        .immediate::<ContinueAsNew>(args, |_| crate::util::new_id("ex"))
        .await?;
    let exec = data.invocation()?.exec.clone();
    // The call (with the new id) is durable before the execution
    // exists; the creation is idempotent by its key, so a replay after
    // a crash finds the same one.
    exec.writer.sync().await?;
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
    // Driven here at once if this node has room.
    let (created, _) = create(&exec.engine, new, &exec.own_package())
        .await
        .map_err(|e| wasmtime::Error::new(Interrupt::from(e)))?;
    tracing::info!(next = %created.id, "continued as a new execution");
    Err(wasmtime::Error::new(Interrupt::ContinueAsNew {
        next: created.id,
    }))
}
