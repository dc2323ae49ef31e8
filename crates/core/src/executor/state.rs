//! What the executor keeps while it drives executions: the node's shared
//! core ([`Inner`]) and, per running execution, what its invocations share
//! ([`ExecState`]).

use super::EngineConfig;
use super::calls::CallOutcome;
use super::guest::GuestData;
use super::replay::{Interrupt, ReplayIndex};
use super::tenant::{TenantCache, TenantSandbox};
use crate::clock::SharedClock;
use crate::journal::{CallError, ErrorKind};
use crate::model::{ExecutionRecord, PackageRecord};
use crate::runtime;

/// The runtime of this node's invocations.
pub type Runtime = runtime::Runtime<GuestData>;
/// A package loaded for this node's invocations.
pub type LoadedPackage = runtime::LoadedPackage<GuestData>;
use crate::store::{Feeds, GroupCommitter, JournalWriter, SharedStore, Timer};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Cancellation of one execution: requested (from the database), delivered
/// (journaled at a suspension point of the workflow).
#[derive(Default)]
pub struct CancelState {
    requested: AtomicBool,
    pub delivered: AtomicBool,
    pub notify: Notify,
    /// An operator paused the execution: it starts no new invocation.
    paused: AtomicBool,
}

impl CancelState {
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn pending(&self) -> bool {
        self.requested.load(Ordering::SeqCst) && !self.delivered.load(Ordering::SeqCst)
    }

    /// Takes a pending cancellation for delivery (at most once).
    pub fn take(&self) -> bool {
        self.pending() && !self.delivered.swap(true, Ordering::SeqCst)
    }
}

/// Everything a running execution's invocations share.
pub struct ExecState {
    pub engine: Arc<Inner>,
    pub record: ExecutionRecord,
    pub package: Arc<LoadedPackage>,
    pub writer: JournalWriter,
    pub index: Mutex<ReplayIndex>,
    pub cancel: Arc<CancelState>,
    /// Fan-out steps started with `start-step`, by call seq.
    pub tasks: Mutex<HashMap<i64, JoinHandle<CallOutcome>>>,
    /// The children started so far (live or replayed): `start-child`'s
    /// seq (the handle) -> the child's execution id.
    pub children: Mutex<HashMap<i64, String>>,
    /// The execution's signal counter when it was claimed: approvals,
    /// signals, cancels and its children's ends since then moved it on.
    pub signals: i64,
    /// Its children's ends it read since the claim (see [`ChildEnds`]).
    pub child_ends: Mutex<ChildEnds>,
    /// The tenant's limits, allow-list, secrets and share.
    pub sandbox: Arc<TenantSandbox>,
    /// Fuel burned by the execution's invocations (journaled and live).
    pub fuel_used: AtomicU64,
    /// The worker that completed this execution's last task: its next
    /// task prefers it for a moment (sticky routing).
    pub last_worker: Mutex<Option<String>>,
    /// The earliest sleep an invocation suspended at: if the execution
    /// hibernates, its hibernation names it, so the scheduler journals the
    /// sleep's end when it is due without running any code
    /// ([`Store::fire_timers`](crate::store::Store::fire_timers)).
    pub timer: Mutex<Option<Timer>>,
}

/// The ends of its children an execution read while claimed. Each child
/// run's end moves its parent's signal counter on by one (its
/// `WakeParent`), so a parent that hibernates after reading an end it
/// did not count would be due at once, for nothing: one claim and replay
/// more. An end is counted only if it surely came after the claim: the
/// child was created by this claim, or read open during it. Counting an
/// end the claim already included would hide a real event (an approval,
/// a signal) from the hibernation, so this never guesses.
#[derive(Default)]
pub struct ChildEnds {
    open: HashSet<String>,
    ended: HashSet<String>,
}

impl ExecState {
    /// The package version this execution runs, as a record (for its
    /// children and its next run, which start it by default).
    pub fn own_package(&self) -> PackageRecord {
        let record = &self.record;
        PackageRecord {
            tenant: record.tenant.clone(),
            sha256: record.package_sha256.clone(),
            name: record.package_name.clone(),
            version: record.package_version,
            info: self.package.info.clone(),
            created_at_ms: 0,
            size_bytes: 0,
        }
    }

    /// The signal counter this execution has seen: the claim's, and the
    /// ends of its children that it read since (see [`ChildEnds`]).
    pub fn seen_signals(&self) -> i64 {
        self.signals + self.child_ends().ended.len() as i64
    }

    fn child_ends(&self) -> std::sync::MutexGuard<'_, ChildEnds> {
        self.child_ends.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that the child (run) `id` was read open (or was created by
    /// this claim: `ended` false), or ended.
    pub fn child_seen(&self, id: &str, ended: bool) {
        let mut ends = self.child_ends();
        if !ended {
            ends.open.insert(id.to_owned());
        } else if ends.open.contains(id) {
            ends.ended.insert(id.to_owned());
        }
    }

    /// Notes that the child run `id` continued as `next`: if `id` was open
    /// since the claim, `next` was created since.
    pub fn child_continued(&self, id: &str, next: &str) {
        let mut ends = self.child_ends();
        if ends.open.contains(id) {
            ends.open.insert(next.to_owned());
        }
    }

    /// Notes that the `sleep` at `seq` of `invocation`, due at `due_at`,
    /// suspended (see [`ExecState::timer`]); the earliest one is kept.
    pub fn sleeping(&self, invocation: &str, seq: i64, due_at: i64) {
        let mut timer = self.timer.lock().unwrap_or_else(|p| p.into_inner());
        if timer.as_ref().is_none_or(|t| due_at < t.due_at) {
            *timer = Some(Timer::new(seq, due_at, invocation));
        }
    }

    /// The limits of an invocation that may use `cpu` (the step's or the
    /// workflow's deadline; the tenant's CPU limit caps it).
    pub fn invocation_limits(&self, cpu: Duration) -> crate::runtime::InvocationLimits {
        let q = &self.sandbox.quotas;
        let config = &self.engine.config;
        let cpu = match q.cpu_ms {
            Some(ms) => cpu.min(Duration::from_millis(ms.max(1) as u64)),
            None => cpu,
        };
        let mut limits = crate::runtime::InvocationLimits::new(
            q.memory_bytes
                .map_or(config.memory_limit_bytes, |b| b.max(1 << 16) as usize),
            cpu,
        );
        if let Some(out) = q.max_output_bytes {
            limits.output_bytes = out.max(0) as usize;
        }
        if config.runtime.fuel {
            limits.fuel = Some(match q.fuel {
                Some(budget) => {
                    (budget.max(0) as u64).saturating_sub(self.fuel_used.load(Ordering::SeqCst))
                }
                None => u64::MAX,
            });
        }
        limits
    }

    pub fn add_fuel(&self, used: u64) {
        self.fuel_used.fetch_add(used, Ordering::SeqCst);
    }

    /// Bytes of `stream` journaled for `invocation` before this run.
    pub fn output_recorded(&self, invocation: &str, stream: crate::runtime::Stream) -> usize {
        self.index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .output_recorded(invocation, stream.name())
    }

    /// Refuses a new call once the journal holds the tenant's maximum.
    pub fn check_journal_room(&self) -> Result<(), Interrupt> {
        let Some(max) = self.sandbox.quotas.max_journal_entries else {
            return Ok(());
        };
        if self.writer.next_seq() > max {
            return Err(Interrupt::Limit {
                kind: ErrorKind::Journal,
                message: format!(
                    "the execution reached its limit of {max} journal entries (tenant '{}')",
                    self.sandbox.name
                ),
            });
        }
        Ok(())
    }

    /// Counts a step call that ended (the `steps_finished` metric).
    pub fn step_finished(&self, ok: bool) {
        crate::metrics::metrics().step_finished(&self.record.tenant, &self.record.package_name, ok);
    }

    /// Refuses a payload larger than the tenant's maximum.
    pub fn check_payload(&self, what: &str, len: usize) -> Result<(), CallError> {
        match self.sandbox.quotas.max_payload_bytes {
            Some(max) if len as i64 > max => Err(CallError::new(
                ErrorKind::Payload,
                format!(
                    "{what} is {len} bytes, more than the tenant's maximum payload of {max} bytes"
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// The shared core of an [`Engine`].
pub struct Inner {
    pub store: SharedStore,
    pub runtime: Arc<Runtime>,
    pub committer: GroupCommitter,
    pub clock: SharedClock,
    pub config: EngineConfig,
    pub node_id: String,
    pub running: Mutex<HashMap<String, Arc<CancelState>>>,
    pub wake: Notify,
    /// Ids of executions this node finished, for in-process waiters.
    pub finished: tokio::sync::broadcast::Sender<String>,
    /// Whether the scheduler runs in this process (else starts are left
    /// to whichever node claims them).
    pub serving: AtomicBool,
    /// Tenants' sandbox settings, read from the store now and then.
    pub tenants: TenantCache,
    /// Package records by (tenant, sha256) (immutable once stored).
    pub packages: Mutex<HashMap<(String, String), PackageRecord>>,
    /// Followed executions' journals (see [`Feeds`]).
    pub feeds: Feeds,
    /// What executions running here wait for besides their journal (room
    /// in the node's memory budget), with since when: shown by `status`.
    pub notes: Arc<Mutex<HashMap<String, (String, i64)>>>,
    /// Wake-ups of long-polling workers and of executions waiting for a
    /// worker's outcome.
    pub tasks: super::worker::TaskSignals,
    /// Step instances kept for later steps (see [`super::idle`]).
    pub idle_steps: Arc<super::idle::IdleSteps>,
}

impl Inner {
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Sets (or clears) what execution `id` waits for, as `status` shows.
    pub fn set_note(&self, id: &str, note: Option<String>) {
        note_on(&self.notes, &self.clock, id, note);
    }

    /// What an invocation of execution `id` calls when it starts and stops
    /// waiting for room in the node's memory budget. A wait first lets go
    /// of the step instances kept idle, whose memory is room.
    pub fn memory_wait_hook(self: &Arc<Self>, id: &str) -> crate::runtime::WaitHook {
        let (notes, clock, id) = (self.notes.clone(), self.clock.clone(), id.to_owned());
        // Weak: the hook lives in stores the kept instances hold.
        let idle = Arc::downgrade(&self.idle_steps);
        Arc::new(move |note: Option<String>| {
            if note.is_some()
                && let Some(idle) = idle.upgrade()
            {
                idle.evict(Duration::ZERO);
            }
            note_on(&notes, &clock, &id, note)
        })
    }
}

fn note_on(
    notes: &Mutex<HashMap<String, (String, i64)>>,
    clock: &SharedClock,
    id: &str,
    note: Option<String>,
) {
    let mut notes = notes.lock().unwrap_or_else(|p| p.into_inner());
    match note {
        Some(note) => {
            notes.insert(id.to_owned(), (note, clock.now_ms()));
        }
        None => {
            notes.remove(id);
        }
    }
}
