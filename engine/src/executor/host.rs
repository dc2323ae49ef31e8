//! `cerebelum:workflow/host`: every import is matched against the journal
//! (replay) or journaled (live) before it has any effect.

use super::calls::{self, CallOutcome, PollPlan, Wait};
use super::invocation::{Invocation, Recorded};
use super::replay::Interrupt;
use super::{WitError, parse_payload};
use crate::model::SideWrite;
use crate::runtime::bindings::cerebelum::workflow::host::{Host, StepHandle};
use crate::runtime::bindings::cerebelum::workflow::types as t;
use crate::runtime::{StepOptions, StoreData};
use serde_json::{Value, json};

impl t::Host for StoreData {}

type WasmResult<T> = wasmtime::Result<T>;

/// Journal kind of a value recorded by user code (`recall` / `remember`).
const RECORD: &str = "record";

fn to_wasm(outcome: CallOutcome) -> WasmResult<Result<Value, t::Error>> {
    match outcome {
        Ok(r) => Ok(r.map_err(Into::into)),
        Err(interrupt) => Err(wasmtime::Error::new(interrupt)),
    }
}

fn payload_result(outcome: CallOutcome) -> WasmResult<Result<String, t::Error>> {
    to_wasm(outcome).map(|r| r.map(|v| v.to_string()))
}

impl StoreData {
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
        let exec = &self.invocation()?.exec;
        // The rate applies while other tenants have work on the node.
        let pause = match &exec.sandbox.journal_rate {
            Some(limit) if exec.engine.runtime.cpu().contended() => limit.take(),
            _ => return Ok(()),
        };
        if !pause.is_zero() {
            let began = self.wait_begin();
            tokio::time::sleep(pause).await;
            self.wait_end(began).await;
        }
        Ok(())
    }

    /// Seq of the call: the recorded one, or a newly journaled one.
    async fn call_seq(
        &mut self,
        kind: &str,
        args: Value,
        live_extra: impl FnOnce(&Invocation) -> (Value, Vec<SideWrite>),
    ) -> WasmResult<(i64, Value)> {
        self.settle().await?;
        let inv = self.invocation()?;
        let (recorded, hash) = inv.record(kind, &args).map_err(wasmtime::Error::new)?;
        match recorded {
            Recorded::Replayed(e) => Ok((e.seq, e.payload)),
            Recorded::Live => {
                let (extra, side) = live_extra(inv);
                let mut payload = json!({ "args": args });
                if let (Some(p), Value::Object(extra)) = (payload.as_object_mut(), extra) {
                    p.extend(extra);
                }
                let seq = inv
                    .push_call(kind, hash, payload.clone(), side)
                    .await
                    .map_err(wasmtime::Error::new)?;
                Ok((seq, payload))
            }
        }
    }

    async fn immediate(
        &mut self,
        kind: &str,
        args: Value,
        live: impl FnOnce(&Invocation) -> Value,
    ) -> WasmResult<Value> {
        self.settle().await?;
        self.invocation()?
            .immediate(kind, args, live)
            .await
            .map_err(wasmtime::Error::new)
    }
}

/// Stops the execution if a step's input is larger than the tenant allows
/// (before it is journaled).
fn check_input(inv: &Invocation, step: &str, input: &str) -> WasmResult<()> {
    inv.exec
        .check_payload(&format!("the input of step '{step}'"), input.len())
        .map_err(|e| {
            wasmtime::Error::new(Interrupt::Limit {
                kind: "payload",
                message: e.message,
            })
        })
}

fn options_json(options: &Option<t::StepOptions>) -> (Option<StepOptions>, Value) {
    let opts: Option<StepOptions> = options.clone().map(Into::into);
    let json = serde_json::to_value(&opts).unwrap_or(Value::Null);
    (opts, json)
}

impl Host for StoreData {
    async fn call_step(
        &mut self,
        step: String,
        input: String,
        options: Option<t::StepOptions>,
    ) -> WasmResult<Result<String, t::Error>> {
        check_input(self.invocation()?, &step, &input)?;
        let (opts, opts_json) = options_json(&options);
        let args = json!({ "step": step, "input": parse_payload(&input), "options": opts_json });
        let (seq, _) = self
            .call_seq("call-step", args, |_| (json!({}), Vec::new()))
            .await?;
        let began = self.wait_begin();
        let inv = self.invocation()?;
        let outcome = calls::step_call(
            inv.exec.clone(),
            inv.id.clone(),
            seq,
            step,
            input,
            opts,
            inv.is_workflow(),
        )
        .await;
        self.wait_end(began).await;
        payload_result(outcome)
    }

    async fn start_step(
        &mut self,
        step: String,
        input: String,
        options: Option<t::StepOptions>,
    ) -> WasmResult<StepHandle> {
        check_input(self.invocation()?, &step, &input)?;
        let (opts, opts_json) = options_json(&options);
        let args = json!({ "step": step, "input": parse_payload(&input), "options": opts_json });
        let (seq, _) = self
            .call_seq("start-step", args, |_| (json!({}), Vec::new()))
            .await?;
        let inv = self.invocation()?;
        if inv.exec.recorded_result(seq).is_none() {
            let task = tokio::spawn(calls::step_call(
                inv.exec.clone(),
                inv.id.clone(),
                seq,
                step,
                input,
                opts,
                false,
            ));
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
        self.call_seq("await-steps", json!({ "handles": handles }), |_| {
            (json!({}), Vec::new())
        })
        .await?;
        let began = self.wait_begin();
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
                        None => Ok(Err(WitError::new(
                            "invalid-handle",
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
        self.wait_end(began).await;
        if let Some(wake_at) = suspend {
            return Err(wasmtime::Error::new(Interrupt::Suspend { wake_at }));
        }
        Ok(results)
    }

    async fn sleep(&mut self, duration_ms: u64) -> WasmResult<Result<(), t::Error>> {
        let (seq, payload) = self
            .call_seq("sleep", json!({ "duration_ms": duration_ms }), |inv| {
                let due = inv.exec.engine.now_ms() + duration_ms as i64;
                (json!({ "due_at": due }), Vec::new())
            })
            .await?;
        let began = self.wait_begin();
        let inv = self.invocation()?;
        let exec = inv.exec.clone();
        let (caller, interruptible) = (inv.id.clone(), inv.is_workflow());
        let outcome = match exec.recorded_result(seq) {
            Some(r) => Ok(r),
            None => {
                let due = payload["due_at"].as_i64().unwrap_or(0);
                match exec.wait_until(due, interruptible).await {
                    Wait::Elapsed => {
                        exec.resolve(&caller, seq, Ok(Value::Null), false, Vec::new())
                            .await
                    }
                    Wait::Cancelled => exec
                        .deliver_cancel(&caller, seq, true, Vec::new())
                        .await
                        .unwrap_or_else(|| Ok(Err(WitError::cancelled()))),
                    Wait::Hibernate => Err(Interrupt::Suspend { wake_at: Some(due) }),
                }
            }
        };
        self.wait_end(began).await;
        to_wasm(outcome).map(|r| r.map(|_| ()))
    }

    async fn poll(
        &mut self,
        check_step: String,
        input: String,
        options: t::PollOptions,
    ) -> WasmResult<Result<String, t::Error>> {
        let args = json!({
            "check_step": check_step,
            "input": parse_payload(&input),
            "options": {
                "interval_ms": options.interval_ms,
                "max_attempts": options.max_attempts,
                "timeout_ms": options.timeout_ms,
            },
        });
        let (seq, payload) = self
            .call_seq("poll", args, |inv| {
                (
                    json!({ "started_at": inv.exec.engine.now_ms() }),
                    Vec::new(),
                )
            })
            .await?;
        let started = payload["started_at"].as_i64().unwrap_or(0);
        let plan = PollPlan {
            interval_ms: options.interval_ms,
            max_attempts: options.max_attempts.max(1),
            deadline_ms: options.timeout_ms.map(|t| started + t as i64),
        };
        let began = self.wait_begin();
        let inv = self.invocation()?;
        let outcome = calls::poll_call(
            inv.exec.clone(),
            inv.id.clone(),
            seq,
            check_step,
            input,
            plan,
            inv.is_workflow(),
        )
        .await;
        self.wait_end(began).await;
        payload_result(outcome)
    }

    async fn await_approval(
        &mut self,
        request: t::ApprovalRequest,
    ) -> WasmResult<Result<t::ApprovalDecision, t::Error>> {
        let args = json!({
            "key": request.key,
            "message": request.message,
            "details": request.details.as_deref().map(parse_payload),
            "timeout_ms": request.timeout_ms,
        });
        let key = request.key.clone();
        let (seq, payload) = self
            .call_seq("await-approval", args.clone(), |inv| {
                let due = request
                    .timeout_ms
                    .map(|t| inv.exec.engine.now_ms() + t as i64);
                let mut stored = args.clone();
                stored["due_at"] = json!(due);
                (
                    json!({ "due_at": due }),
                    vec![SideWrite::OpenApproval {
                        key: request.key.clone(),
                        request: stored,
                    }],
                )
            })
            .await?;
        let due = payload["due_at"].as_i64();
        let began = self.wait_begin();
        let inv = self.invocation()?;
        let outcome = calls::approval_call(
            inv.exec.clone(),
            inv.id.clone(),
            seq,
            key,
            due,
            inv.is_workflow(),
        )
        .await;
        self.wait_end(began).await;
        to_wasm(outcome).map(|r| {
            r.map(|v| {
                if let Some(p) = v.get("approved") {
                    t::ApprovalDecision::Approved(p.to_string())
                } else if let Some(reason) = v.get("rejected") {
                    t::ApprovalDecision::Rejected(
                        reason
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| reason.to_string()),
                    )
                } else {
                    t::ApprovalDecision::TimedOut
                }
            })
        })
    }

    async fn report_progress(&mut self, percent: u8, message: String) -> WasmResult<()> {
        self.immediate(
            "report-progress",
            json!({ "percent": percent.min(100), "message": message }),
            |_| Value::Null,
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
        self.immediate("log", json!({ "level": level, "message": message }), |inv| {
            let message = inv.exec.sandbox.redact(&message);
            tracing::info!(execution_id = %inv.exec.record.id, invocation = %inv.id, level, "{message}");
            Value::Null
        })
        .await
        .map(|_| ())
    }

    async fn now_ms(&mut self) -> WasmResult<u64> {
        self.immediate("now-ms", json!({}), |inv| json!(inv.exec.engine.now_ms()))
            .await
            .map(|v| v.as_u64().unwrap_or(0))
    }

    async fn random_u64(&mut self) -> WasmResult<u64> {
        self.immediate("random-u64", json!({}), |_| {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u8(0);
            json!(h.finish())
        })
        .await
        .map(|v| v.as_u64().unwrap_or(0))
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
        let recorded = self.invocation()?.recall(RECORD, &json!({ "name": name }));
        Ok(recorded.map(|e| e.payload["answer"].to_string()))
    }

    async fn remember(&mut self, name: String, value: String) -> WasmResult<()> {
        // A recorded value is replayed by `recall`; reaching `remember` for a
        // recorded entry means the code did not call `recall` first, and
        // the journal answer wins, as for every other call.
        let value = parse_payload(&value);
        self.immediate(RECORD, json!({ "name": name }), |_| value)
            .await
            .map(|_| ())
    }

    async fn secret(&mut self, name: String) -> WasmResult<Result<String, t::Error>> {
        let inv = self.invocation()?;
        if inv.is_workflow() {
            return Ok(Err(WitError::new(
                "denied",
                "workflow code cannot read secrets; read them in a step",
            )
            .into()));
        }
        let sandbox = &inv.exec.sandbox;
        Ok(match sandbox.secret(&name) {
            Some(value) => Ok(value.to_owned()),
            None => {
                let known: Vec<&str> = sandbox.secrets.iter().map(|(n, _)| n.as_str()).collect();
                Err(WitError::new(
                    "not-found",
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
