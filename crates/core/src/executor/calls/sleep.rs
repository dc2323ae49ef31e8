//! `sleep`: a durable timer. Its due time is journaled with the call; a
//! short one is waited in process, a long one hibernates the execution
//! until it is due, and the scheduler journals its end when it comes
//! (`ExecState::sleeping`, `Store::fire_timers`).
//! Workflow code's sleep ends early on a cancellation.

use super::{WasmResult, to_wasm};
use crate::executor::guest::GuestData;
use crate::executor::replay::Interrupt;
use crate::journal::{Sleep, SleepArgs};
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
    let outcome = match exec.recorded(seq) {
        Some(recorded) => recorded,
        None => {
            match exec
                .wait_for_due(&caller, seq, sleep.due_at, interruptible)
                .await
            {
                None => {
                    exec.resolve(&caller, seq, Ok(Value::Null), false, Vec::new())
                        .await
                }
                Some(Err(Interrupt::Suspend { wake_at })) => {
                    // Hibernating: the scheduler ends this sleep when due.
                    exec.sleeping(&caller, seq, sleep.due_at);
                    Err(Interrupt::Suspend { wake_at })
                }
                Some(ended) => ended,
            }
        }
    };
    data.sandbox.wait_end(began).await;
    to_wasm(outcome).map(|r| r.map(|_| ()))
}
