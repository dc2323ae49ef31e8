//! `cerebelum:workflow/host`: the WIT imports of user code. Each durable
//! call is answered by its module under `calls` (matched against the
//! journal on replay, journaled live, before it has any effect); the
//! rest — the execution's id, the attempt, secrets — are read, not
//! journaled.

use super::calls::{self, WasmResult};
use super::guest::GuestData;
use crate::journal::{CallError, ErrorKind};
use crate::runtime::bindings::cerebelum::workflow::host::{Host, StepHandle};
use crate::runtime::bindings::cerebelum::workflow::types as t;

impl t::Host for GuestData {}

impl Host for GuestData {
    async fn call_step(
        &mut self,
        step: String,
        input: String,
        options: Option<t::StepOptions>,
    ) -> WasmResult<Result<String, t::Error>> {
        calls::step::call_step(self, step, input, options).await
    }

    async fn start_step(
        &mut self,
        step: String,
        input: String,
        options: Option<t::StepOptions>,
    ) -> WasmResult<StepHandle> {
        calls::step::start_step(self, step, input, options).await
    }

    async fn await_steps(
        &mut self,
        handles: Vec<StepHandle>,
    ) -> WasmResult<Vec<Result<String, t::Error>>> {
        calls::step::await_steps(self, handles).await
    }

    async fn sleep(&mut self, duration_ms: u64) -> WasmResult<Result<(), t::Error>> {
        calls::sleep::sleep(self, duration_ms).await
    }

    async fn poll(
        &mut self,
        check_step: String,
        input: String,
        options: t::PollOptions,
    ) -> WasmResult<Result<String, t::Error>> {
        calls::poll::poll(self, check_step, input, options).await
    }

    async fn await_approval(
        &mut self,
        request: t::ApprovalRequest,
    ) -> WasmResult<Result<t::ApprovalDecision, t::Error>> {
        calls::approval::await_approval(self, request).await
    }

    async fn await_signal(
        &mut self,
        name: String,
        timeout_ms: Option<u64>,
    ) -> WasmResult<Result<Option<String>, t::Error>> {
        calls::signal::await_signal(self, name, timeout_ms).await
    }

    async fn set_state(&mut self, state: String) -> WasmResult<Result<(), t::Error>> {
        calls::progress::set_state(self, state).await
    }

    async fn start_child(
        &mut self,
        workflow: String,
        input: String,
        options: Option<t::ChildOptions>,
    ) -> WasmResult<Result<u64, t::Error>> {
        calls::child::start_child(self, workflow, input, options).await
    }

    async fn await_child(&mut self, handle: u64) -> WasmResult<Result<String, t::Error>> {
        calls::child::await_child(self, handle).await
    }

    async fn continue_as_new(&mut self, input: String) -> WasmResult<t::Error> {
        calls::continue_as_new::continue_as_new(self, input).await
    }

    async fn report_progress(&mut self, percent: u8, message: String) -> WasmResult<()> {
        calls::progress::report_progress(self, percent, message).await
    }

    async fn log(&mut self, level: t::LogLevel, message: String) -> WasmResult<()> {
        calls::progress::log(self, level, message).await
    }

    async fn now_ms(&mut self) -> WasmResult<u64> {
        calls::clock::now_ms(self).await
    }

    async fn random_u64(&mut self) -> WasmResult<u64> {
        calls::clock::random_u64(self).await
    }

    async fn recall(&mut self, name: String) -> WasmResult<Option<String>> {
        calls::record::recall(self, name).await
    }

    async fn remember(&mut self, name: String, value: String) -> WasmResult<()> {
        calls::record::remember(self, name, value).await
    }

    async fn patched(&mut self, id: String) -> WasmResult<bool> {
        calls::record::patched(self, id).await
    }

    async fn execution_id(&mut self) -> WasmResult<String> {
        let id = self.invocation()?.exec.record.id.clone();
        Ok(id)
    }

    async fn attempt(&mut self) -> WasmResult<u32> {
        Ok(self.invocation()?.attempt)
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
