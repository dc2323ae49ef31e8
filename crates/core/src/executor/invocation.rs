//! One run of user code (the workflow, or one attempt of a step) and the
//! journal cursor its host calls move along.

use super::guest::GuestData;
use super::idle::IdleInstance;
use super::replay::Interrupt;
use super::state::ExecState;
use crate::journal::{
    Call, CallError, CallKind, DurableCall, Entry, ErrorKind, Event, Immediate, Output, Usage,
    WORKFLOW, describe_call,
};
use crate::runtime::{LimitHit, Rearm, Sandbox, Stream, new_store, rearm_store};
use crate::store::{NewEntry, SideWrite};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The captured streams, in the order their entries are journaled.
const STREAMS: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

/// The host side of one invocation: lives in its store's data.
pub struct Invocation {
    pub exec: Arc<ExecState>,
    /// `wf`, or `<call seq>.<attempt>` for a step attempt.
    pub id: String,
    pub attempt: u32,
    /// Index of the next call among this invocation's journaled calls
    /// (shared with the HTTP hooks, whose requests take their place in it).
    pub cursor: Arc<AtomicUsize>,
    /// Bytes of stdout and stderr the journal holds for this invocation:
    /// what a run before a replay wrote, then what was journaled live.
    output_journaled: [usize; 2],
}

/// What a host call found in the journal.
// Returned and matched at once, never stored: boxing the call would cost
// an allocation per replayed call for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Recorded {
    /// The call was made before: its entry (with its seq and recorded
    /// answer or due time).
    Replayed { seq: i64, call: Call },
    /// The journal has no more calls for this invocation: this one is live.
    Live,
}

/// A call about to be matched against the journal: its kind, arguments
/// (as JSON, for messages) and their hash.
pub struct Matched {
    pub recorded: Recorded,
    pub hash: String,
}

impl Invocation {
    pub fn new(exec: Arc<ExecState>, id: String, attempt: u32) -> Self {
        let output_journaled = STREAMS.map(|s| exec.output_recorded(&id, s));
        Self {
            exec,
            id,
            attempt,
            cursor: Arc::new(AtomicUsize::new(0)),
            output_journaled,
        }
    }

    /// Journal entries for what the guest wrote since the last ones (a
    /// replay writes again what the journal holds: nothing new until it
    /// passes it). Made before each journaled call and at the end, so
    /// `watch` shows a step's output as it goes, in order with its calls.
    pub fn new_output(&mut self, sandbox: &Sandbox) -> Vec<NewEntry> {
        let mut entries = Vec::new();
        for (i, stream) in STREAMS.into_iter().enumerate() {
            let Some(new) = sandbox.output_since(stream, self.output_journaled[i]) else {
                continue;
            };
            self.output_journaled[i] += new.len();
            let output = Output {
                stream: stream.name().to_owned(),
                text: String::from_utf8_lossy(&new).into_owned(),
                bytes: new.len() as u64,
            };
            entries.push(NewEntry::new(self.id.clone(), Event::Output(output)));
        }
        entries
    }

    pub fn is_workflow(&self) -> bool {
        self.id == WORKFLOW
    }

    /// Matches a call of `kind` with `args` against the journal. A
    /// different call at the same place is nondeterminism, and stops the
    /// invocation.
    pub fn record(&mut self, kind: CallKind, args: &impl Serialize) -> Result<Matched, Interrupt> {
        let args = serde_json::to_value(args).unwrap_or(Value::Null);
        let hash = kind.hash_value(&args);
        let index = self.exec.index.lock().unwrap_or_else(|p| p.into_inner());
        let cursor = self.cursor.load(Ordering::SeqCst);
        let Some(entry) = index.call(&self.id, cursor) else {
            if self.exec.engine.config.replay_only {
                // Past the journal: a replay check ends here.
                return Err(Interrupt::Suspend { wake_at: None });
            }
            self.cursor.fetch_add(1, Ordering::SeqCst);
            return Ok(Matched {
                recorded: Recorded::Live,
                hash,
            });
        };
        let Some((call, recorded_hash)) = entry.call() else {
            return Err(self.nondeterminism(entry, &describe_call(kind, &args)));
        };
        if call.kind() != kind || recorded_hash != hash {
            return Err(self.nondeterminism(entry, &describe_call(kind, &args)));
        }
        self.cursor.fetch_add(1, Ordering::SeqCst);
        Ok(Matched {
            recorded: Recorded::Replayed {
                seq: entry.seq,
                call: call.clone(),
            },
            hash,
        })
    }

    fn nondeterminism(&self, entry: &Entry, now: &str) -> Interrupt {
        let recorded = match entry.call() {
            Some((call, _)) => call.describe(),
            None => entry.event.kind().to_owned(),
        };
        let who = if self.is_workflow() {
            "the workflow".to_owned()
        } else {
            format!("step invocation {}", self.id)
        };
        Interrupt::Nondeterminism(format!(
            "at seq {} {who} made a different call than the journal recorded: recorded \
             `{recorded}`, now `{now}`; the code is not deterministic (or the journal was \
             modified)",
            entry.seq
        ))
    }

    /// The invocation's next call is past its journal: it runs live.
    pub fn past_journal(&self) -> bool {
        let index = self.exec.index.lock().unwrap_or_else(|p| p.into_inner());
        index
            .call(&self.id, self.cursor.load(Ordering::SeqCst))
            .is_none()
    }

    /// The recorded call at the cursor if it is exactly this one, of kind
    /// `C` with `args` (and then moves past it); `None`, without moving,
    /// otherwise. For `recall`, where a missing entry means "compute it
    /// live".
    pub fn recall<C: DurableCall>(&mut self, args: &impl Serialize) -> Option<C> {
        let hash = C::KIND.hash(args);
        let index = self.exec.index.lock().unwrap_or_else(|p| p.into_inner());
        let (call, recorded_hash) = index
            .call(&self.id, self.cursor.load(Ordering::SeqCst))?
            .call()?;
        if call.kind() != C::KIND || recorded_hash != hash {
            return None;
        }
        let call = C::from_call(call.clone())?;
        self.cursor.fetch_add(1, Ordering::SeqCst);
        Some(call)
    }

    /// Journals a live call (with side writes committed atomically with
    /// it, which `side` makes given the call's seq); returns its seq.
    pub async fn push_call(
        &self,
        hash: String,
        call: Call,
        side: impl FnOnce(i64) -> Vec<SideWrite>,
    ) -> Result<i64, Interrupt> {
        self.exec.check_journal_room()?;
        let entry = NewEntry::new(self.id.clone(), Event::Call { hash, call });
        Ok(self.exec.writer.push_side(entry, side).await?)
    }

    /// A call of kind `C` answered at once (clock, random, log): replayed
    /// from the journal, or computed by `live` (only then: a replayed log
    /// line is not logged again) and journaled.
    pub async fn immediate<C: Immediate>(
        &mut self,
        args: C::Args,
        live: impl FnOnce(&Invocation) -> C::Answer,
    ) -> Result<C::Answer, Interrupt> {
        let kind = C::KIND;
        let matched = self.record(kind, &args)?;
        match matched.recorded {
            Recorded::Replayed { seq, call } => C::from_call(call).map(C::answer).ok_or_else(|| {
                Interrupt::Nondeterminism(format!(
                    "journal entry {seq} does not hold the answer of a {kind} call; the journal \
                     was modified"
                ))
            }),
            Recorded::Live => {
                let value = live(self);
                let call = C::new(args, value.clone()).into();
                self.push_call(matched.hash, call, |_| Vec::new()).await?;
                Ok(value)
            }
        }
    }
}

/// The error of an invocation stopped by a limit of the sandbox;
/// `starting`: it could not even be instantiated under it.
fn limit_error(data: &Sandbox, exec: &ExecState, hit: LimitHit, starting: bool) -> CallError {
    let kind = match hit {
        LimitHit::Memory => "memory",
        LimitHit::NodeMemory => "node_memory",
        LimitHit::Deadline => "deadline",
        LimitHit::Output => "output",
        LimitHit::Fuel => "fuel",
        LimitHit::Stopped => "cancelled",
    };
    crate::metrics::metrics()
        .limit_breaches
        .get_or_create(&crate::metrics::LimitLabels {
            tenant: exec.record.tenant.clone(),
            kind,
        })
        .inc();
    let limits = data.limits();
    let quotas = &exec.sandbox.quotas;
    let mib = |b: usize| b.div_ceil(1 << 20);
    let asked = data
        .memory_refused()
        .map(|b| format!(" (it asked for {} MiB)", mib(b)))
        .unwrap_or_default();
    match hit {
        LimitHit::Memory if starting => CallError::new(
            ErrorKind::Memory,
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
        LimitHit::Memory => CallError::new(
            ErrorKind::Memory,
            format!(
                "the invocation hit its memory limit of {} MiB{asked}",
                mib(limits.memory_bytes)
            ),
        ),
        LimitHit::NodeMemory => CallError::new(
            ErrorKind::Memory,
            format!(
                "the node's guest memory budget of {} MiB had no room for the invocation{asked}: \
                 every guest holding memory waited for more, or none came within {} s (serve \
                 --max-guest-memory-mb)",
                exec.engine.runtime.memory().bytes() >> 20,
                crate::runtime::MEMORY_WAIT.as_secs()
            ),
        ),
        LimitHit::Deadline => CallError::new(
            ErrorKind::Deadline,
            format!(
                "the invocation ran past its CPU deadline of {} ms",
                limits.cpu.as_millis()
            ),
        ),
        LimitHit::Output => CallError::new(
            ErrorKind::Output,
            format!(
                "the invocation wrote more than {} KiB to stdout and stderr (max output)",
                limits.output_bytes >> 10
            ),
        ),
        LimitHit::Fuel => CallError::new(
            ErrorKind::Fuel,
            format!(
                "the execution burned its fuel budget of {} (tenant '{}')",
                quotas.fuel.unwrap_or_default(),
                exec.sandbox.name
            ),
        ),
        LimitHit::Stopped => CallError::cancelled(),
    }
}

/// How long workflow code may keep running without making a call once a
/// cancellation is pending, before it is stopped.
const CANCEL_GRACE: Duration = Duration::from_millis(50);

/// When a pending cancellation stops running guest code. A step attempt
/// stops at once: the workflow gets the cancellation as the call's result,
/// so what the attempt would return is thrown away. Workflow code gets
/// the cancellation at its next call, where it may compensate; it is
/// stopped only when it makes no call for [`CANCEL_GRACE`] while the
/// cancellation is pending (it spins, and would never reach one).
fn stop_on_cancel(exec: &ExecState, host: &Invocation) -> crate::runtime::StopWhen {
    let cancel = exec.cancel.clone();
    if !host.is_workflow() {
        return Arc::new(move || cancel.pending());
    }
    let cursor = host.cursor.clone();
    // The cursor when the pending cancellation was first seen, and when.
    let seen = std::sync::Mutex::new(None::<(usize, std::time::Instant)>);
    Arc::new(move || {
        if !cancel.pending() {
            return false;
        }
        let at = cursor.load(Ordering::SeqCst);
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        match *seen {
            Some((calls, since)) if calls == at => since.elapsed() >= CANCEL_GRACE,
            _ => {
                *seen = Some((at, std::time::Instant::now()));
                false
            }
        }
    })
}

/// How an invocation ended.
pub enum Outcome {
    /// User code returned (Ok or its own error), or trapped (as an error
    /// of kind `trap`, `deadline` or `memory`).
    Returned(Result<String, CallError>),
    /// The host stopped it.
    Interrupted(Interrupt),
}

/// What to run.
pub enum Entrypoint<'a> {
    Workflow { name: &'a str, input: &'a String },
    Step { name: &'a str, input: &'a String },
}

/// Runs user code in a fresh instance and classifies how it ended.
#[tracing::instrument(name = "invocation", skip_all, fields(invocation = %invocation_id, attempt))]
pub async fn run(
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
    let kind = match entry {
        Entrypoint::Workflow { .. } => "workflow",
        Entrypoint::Step { .. } => "step",
    };
    let _timed = crate::metrics::Timer::start(
        crate::metrics::metrics()
            .invocation_seconds
            .get_or_create(&crate::metrics::InvocationLabels { kind })
            .clone(),
    );
    let host = Invocation::new(exec.clone(), invocation_id.clone(), attempt);
    let stop = stop_on_cancel(exec, &host);
    let is_step = matches!(entry, Entrypoint::Step { .. });
    let (tenant, sha256) = (&exec.sandbox.name, &exec.package.sha256);
    let idle = match is_step {
        true => exec.engine.idle_steps.take(tenant, sha256),
        false => None,
    };
    // A fresh workflow instance waits for room in the half of the node's
    // memory budget that workflow instances may hold (steps have the other
    // half).
    let mut admission = match !is_step {
        true => Some(
            exec.engine
                .runtime
                .memory()
                .admit_workflow(&exec.package.workflow_pages, |note| {
                    exec.engine.set_note(&exec.record.id, note)
                })
                .await,
        ),
        false => None,
    };
    let mut instance = match idle {
        Some(mut idle) => {
            let data = idle.store.data_mut();
            data.bind(host);
            data.sandbox.stop_when(stop);
            let next = Rearm {
                limits,
                seed,
                wall_ms: exec.record.created_at_ms,
                share: exec.sandbox.share.clone(),
                on_wait: exec.engine.memory_wait_hook(&exec.record.id),
            };
            rearm_store(&mut idle.store, next).await;
            idle
        }
        None => {
            let mut store = new_store(
                exec.engine.runtime.engine(),
                limits,
                seed,
                exec.record.created_at_ms,
                |sandbox| GuestData::new(sandbox, host),
            );
            store.data_mut().sandbox.stop_when(stop);
            store.data_mut().sandbox.use_budget(
                exec.engine.runtime.memory().clone(),
                exec.sandbox.name.clone(),
                exec.engine.memory_wait_hook(&exec.record.id),
            );
            store
                .data_mut()
                .sandbox
                .join(
                    exec.sandbox.share.clone(),
                    exec.engine.runtime.cpu(),
                    exec.sandbox.name.clone(),
                )
                .await;
            let package = match exec.package.pre.instantiate_async(&mut store).await {
                Ok(i) => i,
                // A memory limit the component cannot start under: retrying
                // the same instantiation would fail the same way for ever.
                Err(_) if let Some(hit) = store.data().sandbox.limit_hit() => {
                    return Outcome::Returned(Err(limit_error(
                        &store.data().sandbox,
                        exec,
                        hit,
                        true,
                    )));
                }
                Err(e) => {
                    return Outcome::Interrupted(Interrupt::Infra(format!(
                        "instantiating package {}: {e:#}",
                        exec.package.sha256
                    )));
                }
            };
            if let Some(admission) = &mut admission {
                let pages = store.data().sandbox.memory_pages();
                admission.started(pages, &exec.package.workflow_pages);
            }
            IdleInstance::new(store, package)
        }
    };
    let store = &mut instance.store;
    let guest = instance.package.cerebelum_workflow_guest();
    let result = match entry {
        Entrypoint::Workflow { name, input } => {
            guest.call_run_workflow(&mut *store, name, input).await
        }
        Entrypoint::Step { name, input } => guest.call_run_step(&mut *store, name, input).await,
    };
    let fuel_left = limits.fuel.and_then(|_| store.get_fuel().ok());
    let data = store.data_mut();
    let mut entries = data.new_output();
    let outcome = match result {
        Ok(r) => match data.http.interrupted() {
            Some(interrupt) => Outcome::Interrupted(interrupt),
            None => Outcome::Returned(r.map_err(CallError::from)),
        },
        Err(e) => classify(e, data, exec),
    };
    if let (Some(budget), Some(left)) = (limits.fuel, fuel_left)
        && exec.sandbox.quotas.fuel.is_some()
    {
        let used = budget.saturating_sub(left);
        exec.add_fuel(used);
        entries.push(NewEntry::new(
            invocation_id.clone(),
            Event::Usage(Usage { fuel: used }),
        ));
    }
    // A step that returned its result within its limits leaves its
    // instance to a later step (see `idle`).
    if is_step
        && matches!(outcome, Outcome::Returned(Ok(_)))
        && store.data().sandbox.limit_hit().is_none()
        && instance.reusable()
    {
        let data = instance.store.data_mut();
        data.unbind();
        data.sandbox.park();
        exec.engine.idle_steps.keep(tenant, sha256, instance);
    } else {
        instance.retire();
    }
    for entry in entries {
        if let Err(e) = exec.writer.push(entry).await {
            return Outcome::Interrupted(e.into());
        }
    }
    outcome
}

fn classify(e: wasmtime::Error, data: &GuestData, exec: &ExecState) -> Outcome {
    // An engine error a host call passed on as it was (a journal write
    // that failed or was fenced off) stops the invocation like any
    // interruption: it is no fault of the code, which must not end with
    // a trap for it.
    let e = match e.downcast::<crate::Error>() {
        Ok(engine) => return Outcome::Interrupted(engine.into()),
        Err(e) => e,
    };
    if let Some(interrupt) = e.downcast_ref::<Interrupt>() {
        if let Interrupt::Nondeterminism(message) = interrupt
            && let Some(at) = e
                .downcast_ref::<wasmtime::WasmBacktrace>()
                .and_then(user_frame)
        {
            return Outcome::Interrupted(Interrupt::Nondeterminism(format!(
                "{message}; the code made that call {at}"
            )));
        }
        return Outcome::Interrupted(interrupt.clone());
    }
    if let Some(interrupt) = data.http.interrupted() {
        return Outcome::Interrupted(interrupt);
    }
    let trap = e.downcast_ref::<wasmtime::Trap>().copied();
    if trap == Some(wasmtime::Trap::StackOverflow) {
        return Outcome::Returned(Err(CallError::new(
            ErrorKind::Stack,
            format!(
                "the invocation overflowed its call stack of {} KiB (recursion too deep?)",
                crate::runtime::MAX_WASM_STACK >> 10
            ),
        )));
    }
    let hit = if trap == Some(wasmtime::Trap::OutOfFuel) {
        Some(LimitHit::Fuel)
    } else {
        data.sandbox.limit_hit()
    };
    if hit == Some(LimitHit::Stopped) {
        return Outcome::Interrupted(Interrupt::Cancelled);
    }
    let error = match hit {
        Some(hit) => limit_error(&data.sandbox, exec, hit, false),
        None => {
            let tail = data.sandbox.stderr_tail();
            let mut message = format!("{}", e.root_cause());
            if !tail.is_empty() {
                message = format!("{tail} ({message})");
            }
            CallError::new(ErrorKind::Trap, exec.sandbox.redact(&message))
        }
    };
    Outcome::Returned(Err(error))
}

/// Where user code made the call a backtrace ends in: the innermost frame
/// that is not the SDK's, the standard library's or the bindings'. `at
/// src/lib.rs:42 in app::deploy` when the guest has debug info (a debug
/// build), `in app::deploy` with only its function names; None when it
/// has neither, or is not Rust (a Python package: its frames are
/// CPython's; `python -m cerebelum replay` gives the line there).
fn user_frame(trace: &wasmtime::WasmBacktrace) -> Option<String> {
    const NOT_USER: &[&str] = &[
        "cerebelum_sdk::",
        "<cerebelum_sdk::",
        "core::",
        "<core::",
        "alloc::",
        "<alloc::",
        "std::",
        "<std::",
        "serde",
        "<serde",
        "wit_bindgen",
        "<wit_bindgen",
        "wasi::",
        "<wasi::",
        // A Python package's runtime (what runs CPython).
        "componentize_py",
        "<componentize_py",
        "pyo3",
        "<pyo3",
    ];
    // `{:#}`: without the hash. A path (`app::deploy`) is Rust code; a C
    // function (CPython's, in a Python package) or an adapter's
    // trampoline is not.
    let user = |raw: &str| {
        let name = format!("{:#}", rustc_demangle::demangle(raw));
        (name.contains("::") && !NOT_USER.iter().any(|p| name.starts_with(p))).then_some(name)
    };
    let frame = trace
        .frames()
        .iter()
        .find_map(|f| Some((f, f.func_name().and_then(user)?)));
    let (frame, name) = frame?;
    // Its symbols list inlined functions first, the frame's own last: its
    // line is where it made the call (or called what made it, inlined).
    Some(match frame.symbols().last() {
        Some(s) if let (Some(file), Some(line)) = (s.file(), s.line()) => {
            format!("at {file}:{line} in {name}")
        }
        _ => format!("in {name}"),
    })
}
