//! `sleep`: a durable timer. Its due time is journaled with the call; a
//! short one is waited in process, a long one hibernates the execution
//! until it is due. Workflow code's sleep ends early on a cancellation.

use super::{Wait, WasmResult, to_wasm};
use crate::executor::guest::GuestData;
use crate::executor::replay::Interrupt;
use crate::journal::{CallError, Sleep, SleepArgs};
use crate::runtime::bindings::cerebelum::workflow::types as t;
use serde_json::Value;

/// `sleep`: ends when its journaled due time comes.
pub async fn sleep(data: &mut GuestData, duration_ms: u64) -> WasmResult<Result<(), t::Error>> {
    let (seq, sleep) = data
        .call(SleepArgs { duration_ms }, |inv, args| {
            let due_at = inv.exec.engine.now_ms() + duration_ms as i64;
            (Sleep { args, due_at }, Vec::new())
        })
        .await?;
    let began = data.sandbox.wait_begin();
    let inv = data.invocation()?;
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
    data.sandbox.wait_end(began).await;
    to_wasm(outcome).map(|r| r.map(|_| ()))
}
