//! `await-signal`: takes the next signal of a name sent to the execution
//! (signals are buffered until taken), or times out.

use super::{CallOutcome, WasmResult, to_wasm};
use crate::executor::guest::GuestData;
use crate::executor::replay::Interrupt;
use crate::executor::state::ExecState;
use crate::journal::{AwaitSignal, Received, SignalArgs};
use crate::runtime::bindings::cerebelum::workflow::types as t;
use crate::store::SideWrite;
use std::sync::Arc;

/// `await-signal`: journals the call, then takes the signal.
pub async fn await_signal(
    data: &mut GuestData,
    name: String,
    timeout_ms: Option<u64>,
) -> WasmResult<Result<Option<String>, t::Error>> {
    let args = SignalArgs { name, timeout_ms };
    let (seq, wait) = data
        .call(args, |inv, args| {
            let due_at = args.timeout_ms.map(|t| inv.exec.engine.now_ms() + t as i64);
            (AwaitSignal { args, due_at }, Vec::new())
        })
        .await?;
    let began = data.sandbox.wait_begin();
    let inv = data.invocation()?;
    let outcome = take(
        inv.exec.clone(),
        inv.id.clone(),
        seq,
        wait.args.name,
        wait.due_at,
        inv.is_workflow(),
    )
    .await;
    data.sandbox.wait_end(began).await;
    to_wasm(outcome).map(|r| {
        r.map(|v| match Received::from_value(&v) {
            Received::Signal(payload) => Some(payload.to_string()),
            Received::TimedOut => None,
        })
    })
}

/// Waits for the next signal `name` of the execution (the call at `seq`),
/// or until `due_ms`. A buffered signal is taken in the commit that
/// journals the result, so it is delivered once: a crash before that
/// commit leaves it buffered for the replayed call.
pub async fn take(
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
