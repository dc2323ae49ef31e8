//! One run of user code (the workflow, or one attempt of a step) and the
//! journal cursor its host calls move along.

use super::replay::{Interrupt, WORKFLOW, args_hash, describe_call};
use super::{ExecState, WitError};
use crate::model::{Entry, SideWrite};
use crate::runtime::{LimitHit, StoreData, Stream, sandbox_store};
use crate::store::NewEntry;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Journal kind of what an invocation wrote to stdout or stderr (not a
/// call: written by the engine when the invocation ends).
pub(crate) const OUTPUT: &str = "output";
/// Journal kind of the fuel an invocation burned (when fuel is metered
/// and the tenant has a budget).
pub(crate) const USAGE: &str = "usage";

/// The host side of one invocation: lives in its store's data.
pub struct Invocation {
    pub(crate) exec: Arc<ExecState>,
    /// `wf`, or `<call seq>.<attempt>` for a step attempt.
    pub(crate) id: String,
    pub(crate) attempt: u32,
    /// Index of the next call among this invocation's journaled calls
    /// (shared with the HTTP hooks, whose requests take their place in it).
    pub(crate) cursor: Arc<AtomicUsize>,
}

/// What a host call found in the journal.
pub(crate) enum Recorded {
    /// The call was made before: its seq and recorded payload.
    Replayed(Entry),
    /// The journal has no more calls for this invocation: this one is live.
    Live,
}

impl Invocation {
    pub(crate) fn new(exec: Arc<ExecState>, id: String, attempt: u32) -> Self {
        Self {
            exec,
            id,
            attempt,
            cursor: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub(crate) fn is_workflow(&self) -> bool {
        self.id == WORKFLOW
    }

    /// Matches this call against the journal. A different call at the same
    /// place is nondeterminism, and stops the invocation.
    pub(crate) fn record(
        &mut self,
        kind: &str,
        args: &Value,
    ) -> Result<(Recorded, String), Interrupt> {
        let hash = args_hash(kind, args);
        let index = self.exec.index.lock().unwrap_or_else(|p| p.into_inner());
        let cursor = self.cursor.load(Ordering::SeqCst);
        let Some(entry) = index.call(&self.id, cursor) else {
            self.cursor.fetch_add(1, Ordering::SeqCst);
            return Ok((Recorded::Live, hash));
        };
        if entry.kind != kind || entry.args_hash.as_deref() != Some(hash.as_str()) {
            let recorded = describe_call(&entry.kind, &entry.payload["args"]);
            let now = describe_call(kind, args);
            let who = if self.is_workflow() {
                "the workflow".to_owned()
            } else {
                format!("step invocation {}", self.id)
            };
            return Err(Interrupt::Nondeterminism(format!(
                "at seq {} {who} made a different call than the journal recorded: recorded \
                 `{recorded}`, now `{now}`; the code is not deterministic (or the journal was \
                 modified)",
                entry.seq
            )));
        }
        self.cursor.fetch_add(1, Ordering::SeqCst);
        Ok((Recorded::Replayed(entry.clone()), hash))
    }

    /// The recorded call at the cursor if it is exactly this one (and then
    /// moves past it); `None`, without moving, otherwise. For `recall`,
    /// where a missing entry means "compute it live".
    pub(crate) fn recall(&mut self, kind: &str, args: &Value) -> Option<Entry> {
        let hash = args_hash(kind, args);
        let index = self.exec.index.lock().unwrap_or_else(|p| p.into_inner());
        let entry = index
            .call(&self.id, self.cursor.load(Ordering::SeqCst))
            .filter(|e| e.kind == kind && e.args_hash.as_deref() == Some(hash.as_str()))?
            .clone();
        self.cursor.fetch_add(1, Ordering::SeqCst);
        Some(entry)
    }

    /// Journals a live call (with side writes committed atomically with
    /// it); returns its seq.
    pub(crate) async fn push_call(
        &self,
        kind: &str,
        hash: String,
        payload: Value,
        side: Vec<SideWrite>,
    ) -> Result<i64, Interrupt> {
        self.exec.check_journal_room()?;
        let entry = NewEntry {
            invocation: self.id.clone(),
            kind: kind.to_owned(),
            ref_seq: None,
            args_hash: Some(hash),
            payload,
        };
        Ok(self.exec.writer.push_side(entry, side).await?)
    }

    /// A call answered at once (clock, random, log): replayed from the
    /// journal, or computed by `live` (only then: a replayed log line is
    /// not logged again) and journaled.
    pub(crate) async fn immediate(
        &mut self,
        kind: &str,
        args: Value,
        live: impl FnOnce(&Invocation) -> Value,
    ) -> Result<Value, Interrupt> {
        match self.record(kind, &args)? {
            (Recorded::Replayed(e), _) => Ok(e.payload["answer"].clone()),
            (Recorded::Live, hash) => {
                let answer = live(self);
                self.push_call(
                    kind,
                    hash,
                    json!({ "args": args, "answer": answer }),
                    Vec::new(),
                )
                .await?;
                Ok(answer)
            }
        }
    }
}

/// The error of an invocation stopped by a limit of the sandbox;
/// `starting`: it could not even be instantiated under it.
fn limit_error(data: &StoreData, exec: &ExecState, hit: LimitHit, starting: bool) -> WitError {
    let limits = data.limits();
    let quotas = &exec.sandbox.quotas;
    let mib = |b: usize| b.div_ceil(1 << 20);
    let asked = data
        .memory_refused()
        .map(|b| format!(" (it asked for {} MiB)", mib(b)))
        .unwrap_or_default();
    match hit {
        LimitHit::Memory if starting => WitError::new(
            "memory",
            format!(
                "the package needs {} MiB of linear memory to start, more than the limit of \
                 {} MiB per invocation of tenant '{}'; raise it (`cerebelum admin tenant update \
                 {} --memory-mb N`)",
                data.memory_refused().map_or(0, mib),
                mib(limits.memory_bytes),
                exec.sandbox.name,
                exec.sandbox.name
            ),
        ),
        LimitHit::Memory => WitError::new(
            "memory",
            format!(
                "the invocation hit its memory limit of {} MiB{asked}",
                mib(limits.memory_bytes)
            ),
        ),
        LimitHit::NodeMemory => WitError::new(
            "memory",
            format!(
                "the node's guest memory budget of {} MiB had no room for the invocation for {} \
                 s{asked} (serve --max-guest-memory-mb)",
                exec.engine.runtime.memory().bytes() >> 20,
                crate::runtime::MEMORY_WAIT.as_secs()
            ),
        ),
        LimitHit::Deadline => WitError::new(
            "deadline",
            format!(
                "the invocation ran past its CPU deadline of {} ms",
                limits.cpu.as_millis()
            ),
        ),
        LimitHit::Output => WitError::new(
            "output",
            format!(
                "the invocation wrote more than {} KiB to stdout and stderr (max output)",
                limits.output_bytes >> 10
            ),
        ),
        LimitHit::Fuel => WitError::new(
            "fuel",
            format!(
                "the execution burned its fuel budget of {} (tenant '{}')",
                quotas.fuel.unwrap_or_default(),
                exec.sandbox.name
            ),
        ),
    }
}

/// How an invocation ended.
pub(crate) enum Outcome {
    /// User code returned (Ok or its own error), or trapped (as an error
    /// of kind `trap`, `deadline` or `memory`).
    Returned(Result<String, WitError>),
    /// The host stopped it.
    Interrupted(Interrupt),
}

/// What to run.
pub(crate) enum Entrypoint<'a> {
    Workflow { name: &'a str, input: &'a String },
    Step { name: &'a str, input: &'a String },
}

/// Runs user code in a fresh instance and classifies how it ended.
pub(crate) async fn run(
    exec: &Arc<ExecState>,
    invocation_id: String,
    attempt: u32,
    cpu: Duration,
    entry: Entrypoint<'_>,
) -> Outcome {
    let limits = exec.invocation_limits(cpu);
    let seed = {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut h = DefaultHasher::new();
        (&exec.record.id, &invocation_id).hash(&mut h);
        h.finish()
    };
    let host = Invocation::new(exec.clone(), invocation_id.clone(), attempt);
    let mut store = sandbox_store(
        exec.engine.runtime.engine(),
        limits,
        Some(host),
        seed,
        exec.record.created_at_ms,
    );
    store.data_mut().use_budget(
        exec.engine.runtime.memory().clone(),
        exec.engine.memory_wait_hook(&exec.record.id),
    );
    store
        .data_mut()
        .join(
            exec.sandbox.share.clone(),
            exec.engine.runtime.cpu(),
            exec.sandbox.name.clone(),
        )
        .await;
    let instance = match exec.package.pre.instantiate_async(&mut store).await {
        Ok(i) => i,
        // A memory limit the component cannot start under: retrying the
        // same instantiation would fail the same way for ever.
        Err(_) if let Some(hit) = store.data().limit_hit() => {
            return Outcome::Returned(Err(limit_error(store.data(), exec, hit, true)));
        }
        Err(e) => {
            return Outcome::Interrupted(Interrupt::Infra(format!(
                "instantiating package {}: {e:#}",
                exec.package.sha256
            )));
        }
    };
    let guest = instance.cerebelum_workflow_guest();
    let result = match entry {
        Entrypoint::Workflow { name, input } => {
            guest.call_run_workflow(&mut store, name, input).await
        }
        Entrypoint::Step { name, input } => guest.call_run_step(&mut store, name, input).await,
    };
    let fuel_left = limits.fuel.and_then(|_| store.get_fuel().ok());
    let data = store.data();
    let outcome = match result {
        Ok(r) => match data.http.interrupted() {
            Some(interrupt) => Outcome::Interrupted(interrupt),
            None => Outcome::Returned(r.map_err(WitError::from)),
        },
        Err(e) => classify(e, data, exec),
    };
    let mut entries = Vec::new();
    for stream in [Stream::Stdout, Stream::Stderr] {
        let written = data.output(stream);
        let before = exec.output_recorded(&invocation_id, stream);
        if written.len() > before {
            let text = String::from_utf8_lossy(&written[before..]).into_owned();
            entries.push(NewEntry {
                invocation: invocation_id.clone(),
                kind: OUTPUT.into(),
                ref_seq: None,
                args_hash: None,
                payload: json!({ "stream": stream.name(), "text": text, "bytes": written.len() - before }),
            });
        }
    }
    if let (Some(budget), Some(left)) = (limits.fuel, fuel_left)
        && exec.sandbox.quotas.fuel.is_some()
    {
        let used = budget.saturating_sub(left);
        exec.add_fuel(used);
        entries.push(NewEntry {
            invocation: invocation_id.clone(),
            kind: USAGE.into(),
            ref_seq: None,
            args_hash: None,
            payload: json!({ "fuel": used }),
        });
    }
    drop(store);
    for entry in entries {
        if let Err(e) = exec.writer.push(entry).await {
            return Outcome::Interrupted(e.into());
        }
    }
    outcome
}

fn classify(e: wasmtime::Error, data: &StoreData, exec: &ExecState) -> Outcome {
    if let Some(interrupt) = e.downcast_ref::<Interrupt>() {
        return Outcome::Interrupted(interrupt.clone());
    }
    if let Some(interrupt) = data.http.interrupted() {
        return Outcome::Interrupted(interrupt);
    }
    let trap = e.downcast_ref::<wasmtime::Trap>().copied();
    if trap == Some(wasmtime::Trap::StackOverflow) {
        return Outcome::Returned(Err(WitError::new(
            "stack",
            format!(
                "the invocation overflowed its call stack of {} KiB (recursion too deep?)",
                crate::runtime::MAX_WASM_STACK >> 10
            ),
        )));
    }
    let hit = if trap == Some(wasmtime::Trap::OutOfFuel) {
        Some(LimitHit::Fuel)
    } else {
        data.limit_hit()
    };
    let error = match hit {
        Some(hit) => limit_error(data, exec, hit, false),
        None => {
            let tail = data.stderr_tail();
            let mut message = format!("{}", e.root_cause());
            if !tail.is_empty() {
                message = format!("{tail} ({message})");
            }
            WitError::new("trap", exec.sandbox.redact(&message))
        }
    };
    Outcome::Returned(Err(error))
}
