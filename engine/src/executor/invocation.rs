//! One run of user code (the workflow, or one attempt of a step) and the
//! journal cursor its host calls move along.

use super::replay::{Interrupt, WORKFLOW, args_hash, describe_call};
use super::{ExecState, WitError};
use crate::model::{Entry, SideWrite};
use crate::runtime::{InvocationLimits, StoreData, sandbox_store};
use crate::store::NewEntry;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The host side of one invocation: lives in its store's data.
pub struct Invocation {
    pub(crate) exec: Arc<ExecState>,
    /// `wf`, or `<call seq>.<attempt>` for a step attempt.
    pub(crate) id: String,
    pub(crate) attempt: u32,
    cursor: usize,
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
            cursor: 0,
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
        let Some(entry) = index.call(&self.id, self.cursor) else {
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
        self.cursor += 1;
        Ok((Recorded::Replayed(entry.clone()), hash))
    }

    /// The recorded call at the cursor if it is exactly this one (and then
    /// moves past it); `None`, without moving, otherwise. For `recall`,
    /// where a missing entry means "compute it live".
    pub(crate) fn recall(&mut self, kind: &str, args: &Value) -> Option<Entry> {
        let hash = args_hash(kind, args);
        let index = self.exec.index.lock().unwrap_or_else(|p| p.into_inner());
        let entry = index
            .call(&self.id, self.cursor)
            .filter(|e| e.kind == kind && e.args_hash.as_deref() == Some(hash.as_str()))?
            .clone();
        self.cursor += 1;
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
    let config = &exec.engine.config;
    let limits = InvocationLimits {
        memory_bytes: config.memory_limit_bytes,
        cpu,
    };
    let seed = {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut h = DefaultHasher::new();
        (&exec.record.id, &invocation_id).hash(&mut h);
        h.finish()
    };
    let host = Invocation::new(exec.clone(), invocation_id, attempt);
    let mut store = sandbox_store(
        exec.engine.runtime.engine(),
        limits,
        Some(host),
        seed,
        exec.record.created_at_ms,
    );
    let instance = match exec.package.pre.instantiate_async(&mut store).await {
        Ok(i) => i,
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
    match result {
        Ok(r) => Outcome::Returned(r.map_err(WitError::from)),
        Err(e) => classify(e, store.data()),
    }
}

fn classify(e: wasmtime::Error, data: &StoreData) -> Outcome {
    if let Some(interrupt) = e.downcast_ref::<Interrupt>() {
        return Outcome::Interrupted(interrupt.clone());
    }
    let limits = data.limits();
    let error = match data.limit_hit() {
        Some(crate::runtime::LimitHit::Deadline) => WitError::new(
            "deadline",
            format!(
                "the invocation ran past its CPU deadline of {} ms",
                limits.cpu.as_millis()
            ),
        ),
        Some(crate::runtime::LimitHit::Memory) => WitError::new(
            "memory",
            format!(
                "the invocation hit its memory limit of {} MiB",
                limits.memory_bytes >> 20
            ),
        ),
        None => {
            let tail = data.stderr_tail();
            let mut message = format!("{}", e.root_cause());
            if !tail.is_empty() {
                message = format!("{tail} ({message})");
            }
            WitError::new("trap", message)
        }
    };
    Outcome::Returned(Err(error))
}
