//! `await-approval`: waits for a person's decision (`cerebelum approve` /
//! `reject`, the console, the API) or its timeout. The request is written
//! to the approvals table in the commit that journals the call; the
//! decision is the call's result.

use super::{CallOutcome, WasmResult, to_wasm};
use crate::executor::guest::GuestData;
use crate::executor::parse_payload;
use crate::executor::replay::Interrupt;
use crate::executor::state::ExecState;
use crate::journal::{ApprovalArgs, AwaitApproval, Decided};
use crate::runtime::bindings::cerebelum::workflow::types as t;
use crate::store::SideWrite;
use serde_json::{Value, json};
use std::sync::Arc;

/// `await-approval`: journals the request, then waits for its decision.
pub async fn await_approval(
    data: &mut GuestData,
    request: t::ApprovalRequest,
) -> WasmResult<Result<t::ApprovalDecision, t::Error>> {
    let args = ApprovalArgs {
        key: request.key,
        message: request.message,
        details: request.details.as_deref().map(parse_payload),
        timeout_ms: request.timeout_ms,
    };
    let (seq, approval) = data
        .call(args, |inv, args| {
            let due_at = args.timeout_ms.map(|t| inv.exec.engine.now_ms() + t as i64);
            // The side table keeps the request with its due time.
            let mut stored = serde_json::to_value(&args).unwrap_or(Value::Null);
            stored["due_at"] = json!(due_at);
            let open = SideWrite::OpenApproval {
                key: args.key.clone(),
                request: stored,
            };
            (AwaitApproval { args, due_at }, vec![open])
        })
        .await?;
    let began = data.sandbox.wait_begin();
    let inv = data.invocation()?;
    let outcome = wait(
        inv.exec.clone(),
        inv.id.clone(),
        seq,
        approval.args.key,
        approval.due_at,
        inv.is_workflow(),
    )
    .await;
    data.sandbox.wait_end(began).await;
    to_wasm(outcome).map(|r| {
        r.map(|v| match Decided::from_value(&v) {
            Decided::Approved(payload) => t::ApprovalDecision::Approved(payload.to_string()),
            Decided::Rejected(reason) => t::ApprovalDecision::Rejected(reason),
            Decided::TimedOut => t::ApprovalDecision::TimedOut,
        })
    })
}

/// Waits for the approval journaled at `seq` to be decided or to time out.
pub async fn wait(
    exec: Arc<ExecState>,
    caller: String,
    seq: i64,
    key: String,
    due_ms: Option<i64>,
    interruptible: bool,
) -> CallOutcome {
    if let Some(recorded) = exec.recorded(seq) {
        return recorded;
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
