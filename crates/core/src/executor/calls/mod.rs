//! The host calls of user code, one module per kind: how each is matched
//! against the journal (replay) or journaled (live), answered, waited for
//! and resolved. `host` routes the WIT imports here; the journal types and
//! how a call is shown live in `cerebelum_types::journal::calls`, module
//! for module.
//!
//! This module holds what they share: journaling a call
//! ([`GuestData::call`], [`GuestData::immediate`]) and the one waiting
//! primitive ([`ExecState::wait_until`], [`ExecState::resolve`], …). A call
//! that takes time starts from its journaled entry (live or replayed) and
//! picks up where the journal stops: completed calls return their recorded
//! result, a call cut short by a crash continues from its recorded
//! attempts and due times.

pub mod approval;
pub mod child;
pub mod clock;
pub mod continue_as_new;
pub mod poll;
pub mod progress;
pub mod record;
pub mod signal;
pub mod sleep;
pub mod step;

use super::guest::GuestData;
use super::invocation::{Invocation, Recorded};
use super::replay::Interrupt;
use super::state::ExecState;
use crate::journal::{
    CallError, CallKind, DurableCall, ErrorKind, Event, Immediate, Outcome as CallResult,
};
use crate::runtime::bindings::cerebelum::workflow::types as t;
use crate::store::{NewEntry, SideWrite};
use serde::Serialize;
use serde_json::Value;

pub type WasmResult<T> = wasmtime::Result<T>;

/// What a call that takes time ends with.
pub type CallOutcome = Result<CallResult, Interrupt>;

/// How a wait ended.
pub enum Wait {
    Elapsed,
    Cancelled,
    /// Too long to wait in process: the execution hibernates.
    Hibernate,
}

impl ExecState {
    /// Waits until `due_ms` (journaled), in process if it is short.
    /// `interruptible`: a cancellation ends the wait (workflow code only).
    pub async fn wait_until(&self, due_ms: i64, interruptible: bool) -> Wait {
        let threshold = self.engine.config.hibernate_after.as_millis() as i64;
        loop {
            if interruptible && self.cancel.pending() {
                return Wait::Cancelled;
            }
            let remaining = due_ms - self.engine.now_ms();
            if remaining <= 0 {
                return Wait::Elapsed;
            }
            if remaining > threshold {
                return Wait::Hibernate;
            }
            let notified = self.cancel.notify.notified();
            tokio::select! {
                _ = self.engine.clock.sleep_until(due_ms) => {}
                _ = notified, if interruptible => {}
            }
        }
    }

    /// Waits, for the call at `seq`, until `due_ms` (see
    /// [`ExecState::wait_until`]): `None` once it is due; else how the
    /// call ends now — a cancellation delivered as its result, or a
    /// suspension until `due_ms`. Sleeps, retries' backoffs and polls'
    /// intervals all wait this way.
    pub async fn wait_for_due(
        &self,
        caller: &str,
        seq: i64,
        due_ms: i64,
        interruptible: bool,
    ) -> Option<CallOutcome> {
        match self.wait_until(due_ms, interruptible).await {
            Wait::Elapsed => None,
            Wait::Cancelled => Some(self.end_cancelled(caller, seq, Vec::new()).await),
            Wait::Hibernate => Some(Err(Interrupt::Suspend {
                wake_at: Some(due_ms),
            })),
        }
    }

    /// Journals the result of the call at `seq`; durably if user code must
    /// not see it before it is stored.
    pub async fn resolve(
        &self,
        invocation: &str,
        seq: i64,
        result: CallResult,
        durable: bool,
        side: Vec<SideWrite>,
    ) -> CallOutcome {
        let entry = NewEntry::new(
            invocation,
            Event::Result {
                call: seq,
                outcome: result.clone(),
            },
        );
        if durable || !side.is_empty() {
            self.writer.commit(vec![entry], side, None).await?;
        } else {
            self.writer.push(entry).await?;
        }
        Ok(result)
    }

    /// Journals the result of the call at `seq`, after `served` (what a
    /// worker's step printed and the worker that served it, in the same
    /// commit).
    ///
    /// A worker's outcome is not waited for: the task keeps it durably, so
    /// after a crash that loses the entries the open attempt finds it again
    /// and they are written anew — user code may see it at once. Anything
    /// else the code then makes durable is committed after them, in order.
    async fn resolve_after(
        &self,
        invocation: &str,
        seq: i64,
        result: CallResult,
        mut served: Vec<NewEntry>,
    ) -> CallOutcome {
        if served.is_empty() {
            return self
                .resolve(invocation, seq, result, true, Vec::new())
                .await;
        }
        let entry = NewEntry::new(
            invocation,
            Event::Result {
                call: seq,
                outcome: result.clone(),
            },
        );
        served.push(entry);
        self.writer.push_all(served).await?;
        Ok(result)
    }

    /// Delivers a pending cancellation as the result of the call at `seq`,
    /// if there is one and `interruptible`.
    pub async fn deliver_cancel(
        &self,
        invocation: &str,
        seq: i64,
        interruptible: bool,
        side: Vec<SideWrite>,
    ) -> Option<CallOutcome> {
        if !interruptible || !self.cancel.take() {
            return None;
        }
        tracing::info!(seq, "delivering cancellation");
        Some(
            self.resolve(invocation, seq, Err(CallError::cancelled()), true, side)
                .await,
        )
    }

    /// Ends the call at `seq`, whose wait a cancellation of workflow code
    /// cut short: the cancellation is its result ([`deliver_cancel`],
    /// with `side`), or an error that says so if it was delivered already.
    ///
    /// [`deliver_cancel`]: ExecState::deliver_cancel
    pub async fn end_cancelled(
        &self,
        invocation: &str,
        seq: i64,
        side: Vec<SideWrite>,
    ) -> CallOutcome {
        self.deliver_cancel(invocation, seq, true, side)
            .await
            .unwrap_or_else(|| Ok(Err(CallError::cancelled())))
    }

    /// What the call at `seq` is answered with before it waits: its
    /// recorded result (replay), or a pending cancellation (delivered to
    /// workflow code). `None`: it goes on.
    pub async fn answered(
        &self,
        caller: &str,
        seq: i64,
        interruptible: bool,
    ) -> Option<CallOutcome> {
        if let Some(recorded) = self.recorded(seq) {
            return Some(recorded);
        }
        self.deliver_cancel(caller, seq, interruptible, Vec::new())
            .await
    }

    /// The call at `seq` as the journal answers it: its recorded result,
    /// or, in a replay check (which stops where the journal does), a
    /// suspension there. `None`: the call goes on live.
    pub fn recorded(&self, seq: i64) -> Option<CallOutcome> {
        match self.recorded_result(seq) {
            Some(result) => Some(Ok(result)),
            None if self.engine.config.replay_only => {
                Some(Err(Interrupt::Suspend { wake_at: None }))
            }
            None => None,
        }
    }

    /// The recorded result of the call at `seq`, if the journal has one.
    pub fn recorded_result(&self, seq: i64) -> Option<CallResult> {
        let index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        index.result(seq).cloned()
    }
}

/// A call's outcome as the guest gets it: its result, or the interrupt
/// that stops the invocation (a suspension, nondeterminism, …).
pub fn to_wasm(outcome: CallOutcome) -> WasmResult<Result<Value, t::Error>> {
    match outcome {
        Ok(r) => Ok(r.map_err(Into::into)),
        Err(interrupt) => Err(wasmtime::Error::new(interrupt)),
    }
}

/// [`to_wasm`] with the value as JSON text.
pub fn payload_result(outcome: CallOutcome) -> WasmResult<Result<String, t::Error>> {
    to_wasm(outcome).map(|r| r.map(|v| v.to_string()))
}

/// A recorded call of the right kind that does not hold what its kind
/// holds (a modified journal).
pub fn misfit(seq: i64, kind: CallKind) -> wasmtime::Error {
    wasmtime::Error::new(Interrupt::Nondeterminism(format!(
        "journal entry {seq} does not hold a {kind} call; the journal was modified"
    )))
}

/// Stops the execution if a payload of user code (`what`: "the input of
/// step 'x'") is larger than the tenant allows (before it is journaled).
pub fn check_payload(inv: &Invocation, what: &str, bytes: usize) -> WasmResult<()> {
    inv.exec.check_payload(what, bytes).map_err(|e| {
        wasmtime::Error::new(Interrupt::Limit {
            kind: ErrorKind::Payload,
            message: e.message,
        })
    })
}

impl GuestData {
    pub fn invocation(&mut self) -> WasmResult<&mut Invocation> {
        self.host.as_mut().ok_or_else(|| {
            wasmtime::Error::msg("host calls are not available while describing a package")
        })
    }

    /// Waits until HTTP requests made before this call are journaled, so
    /// journal entries stay in call order (see `executor::http`).
    /// Also where a tenant over its journal rate waits (while other
    /// tenants have work on the node), giving its core and its place to
    /// others meanwhile.
    pub async fn settle(&mut self) -> WasmResult<()> {
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

    /// The call of kind `C` with `args`: the recorded one (and its seq),
    /// or, live, the one `live` makes of the arguments (with side writes
    /// committed atomically with it), newly journaled.
    pub async fn call<C: DurableCall, A: Serialize>(
        &mut self,
        args: A,
        live: impl FnOnce(&Invocation, A) -> (C, Vec<SideWrite>),
    ) -> WasmResult<(i64, C)> {
        self.settle().await?;
        let inv = self.invocation()?;
        let matched = inv.record(C::KIND, &args).map_err(wasmtime::Error::new)?;
        match matched.recorded {
            Recorded::Replayed { seq, call } => C::from_call(call)
                .map(|c| (seq, c))
                .ok_or_else(|| misfit(seq, C::KIND)),
            Recorded::Live => {
                let (call, side) = live(inv, args);
                let seq = inv
                    .push_call(matched.hash, call.clone().into(), |_| side)
                    .await
                    .map_err(wasmtime::Error::new)?;
                Ok((seq, call))
            }
        }
    }

    /// A call of kind `C` answered at once (the clock, randomness, a log
    /// line): its recorded answer, or the one `live` gives (only then: a
    /// replayed log line is not logged again), newly journaled.
    pub async fn immediate<C: Immediate>(
        &mut self,
        args: C::Args,
        live: impl FnOnce(&Invocation) -> C::Answer,
    ) -> WasmResult<C::Answer> {
        self.settle().await?;
        self.invocation()?
            .immediate::<C>(args, live)
            .await
            .map_err(wasmtime::Error::new)
    }
}
