//! The per-invocation store: WASI without ambient authority (no files, no
//! environment, no sockets; clocks and randomness deterministic per
//! invocation; HTTP only through the embedder's hooks), limits on memory,
//! CPU time, fuel and output, and the tenant's share of running
//! invocations.
//!
//! The store's data belongs to the embedder (the executor), as
//! wasmtime-wasi's `WasiView` intends: it holds a [`Sandbox`] and
//! whatever its host calls need, and implements [`Embedding`].

use super::bindings::cerebelum::workflow::{host, types};
use super::cpu::{Core, CpuSlots};
use super::memory::{Held, MemoryBudget};
use super::output::{CapturedOutput, Stream};
use rand::SeedableRng;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{Engine, ResourceLimiterAsync, Store, UpdateDeadline};
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView,
    WasiView,
};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Captured stdout + stderr of an invocation without a tenant limit.
pub const DEFAULT_OUTPUT_BYTES: usize = 64 << 10;

/// Limits of one invocation.
#[derive(Debug, Clone, Copy)]
pub struct InvocationLimits {
    /// Largest linear memory, bytes.
    pub memory_bytes: usize,
    /// CPU time the guest may run (time spent waiting in host calls is not
    /// counted).
    pub cpu: Duration,
    /// Captured stdout + stderr, bytes; a write past it ends the invocation.
    pub output_bytes: usize,
    /// Fuel the invocation may burn, when the engine meters fuel (`None`:
    /// it does not).
    pub fuel: Option<u64>,
}

impl InvocationLimits {
    /// Limits for memory and CPU, with the default output and no fuel.
    pub fn new(memory_bytes: usize, cpu: Duration) -> Self {
        Self {
            memory_bytes,
            cpu,
            output_bytes: DEFAULT_OUTPUT_BYTES,
            fuel: None,
        }
    }
}

/// Why an invocation was stopped by the sandbox, if it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// Its own memory limit.
    Memory,
    /// The node's guest memory budget stayed full for
    /// [`super::memory::MAX_WAIT`].
    NodeMemory,
    Deadline,
    Output,
    Fuel,
    /// The embedder's stop condition held ([`Sandbox::stop_when`]).
    Stopped,
}

/// A condition under which running guest code is stopped at the next
/// epoch tick (e.g. its execution was cancelled); asked at every tick.
pub type StopWhen = Arc<dyn Fn() -> bool + Send + Sync>;

/// Told when an invocation starts waiting for room in the node's memory
/// budget (with what it waits for) and when the wait ends (`None`).
pub type WaitHook = Arc<dyn Fn(Option<String>) + Send + Sync>;

/// What the data of an invocation's `Store` provides: its [`Sandbox`],
/// WASI and `wasi:http` views of it, and the `cerebelum:workflow` host.
/// The embedder (the executor) implements it on a type of its own.
pub trait Embedding:
    WasiView + WasiHttpView + host::Host + types::Host + Send + Sized + 'static
{
    fn sandbox(&mut self) -> &mut Sandbox;

    fn sandbox_ref(&self) -> &Sandbox;

    /// Data for an instance that only answers `describe`: no execution,
    /// no host calls.
    fn without_host(sandbox: Sandbox) -> Self;
}

/// The runtime's part of an invocation's store data: WASI without ambient
/// authority, the limits and what the invocation used of them, its
/// captured output, and its hold on the node's cores and memory.
pub struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    http_ctx: WasiHttpCtx,
    limits: InvocationLimits,
    limit_hit: Option<LimitHit>,
    /// The size a memory asked to grow to when a limit refused it.
    memory_refused: Option<usize>,
    /// The node's memory budget, the tenant it counts this invocation's
    /// memory for, and what the invocation holds of it.
    budget: Option<Budget>,
    output: CapturedOutput,
    started: Instant,
    host_time: Duration,
    /// The tenant's share of running invocations: held while guest code
    /// runs, given back while it waits in a host call.
    share: Option<(Arc<Semaphore>, Option<OwnedSemaphorePermit>)>,
    /// A core of the node's (see [`CpuSlots`]): held while guest code runs,
    /// given back at every epoch tick and while waiting in a host call.
    cpu: Option<CpuHold>,
    stop: Option<StopWhen>,
    /// Pages counted as held by a waiter while the invocation waits for
    /// other invocations ([`Sandbox::wait_on_guests_begin`]).
    waiting_pages: usize,
    /// The sources of WASI randomness, reseeded for each invocation an
    /// instance serves ([`Sandbox::rearm`]).
    random: [SeededRng; 2],
    /// The WASI wall clock, set likewise.
    wall: FrozenWallClock,
    _live: LiveGuard,
}

/// What a parked sandbox takes on for the invocation its instance serves
/// next ([`rearm_store`]): what [`new_store`], [`Sandbox::use_budget`]
/// and [`Sandbox::join`] gave the first.
pub struct Rearm {
    pub limits: InvocationLimits,
    pub seed: u64,
    pub wall_ms: i64,
    /// The tenant's share of running invocations.
    pub share: Arc<Semaphore>,
    /// Told when the invocation waits for room in the node's memory.
    pub on_wait: WaitHook,
}

/// A seeded random source the WASI context draws from, which the sandbox
/// can seed again when its instance serves another invocation.
#[derive(Clone)]
struct SeededRng(Arc<Mutex<rand::rngs::StdRng>>);

impl SeededRng {
    fn new(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(
            seed,
        ))))
    }

    fn reseed(&self, seed: u64) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = rand::rngs::StdRng::seed_from_u64(seed);
    }

    fn rng(&self) -> std::sync::MutexGuard<'_, rand::rngs::StdRng> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl rand::TryRng for SeededRng {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        self.rng().try_next_u32()
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.rng().try_next_u64()
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.rng().try_fill_bytes(dst)
    }
}

/// The seed of the insecure random source, from an invocation's seed.
const INSECURE: u64 = 0x9e37_79b9_7f4a_7c15;

/// An invocation's part of the node's memory budget.
struct Budget {
    budget: MemoryBudget,
    tenant: Arc<str>,
    held: Held,
    on_wait: WaitHook,
}

/// An invocation's hold on a core (see [`CpuSlots`]).
struct CpuHold {
    slots: CpuSlots,
    tenant: Arc<str>,
    held: Arc<Mutex<Option<Core>>>,
    /// Nanoseconds spent queueing for a core at epoch ticks (not CPU).
    queued: Arc<AtomicU64>,
}

impl CpuHold {
    async fn take_core(&self) {
        let core = self.slots.acquire(&self.tenant).await;
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(core);
    }

    fn give_core(&self) {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Whether the core was taken too recently to give it up yet.
    fn young(&self) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(Core::young)
    }

    /// What runs at an epoch tick: give the core up, let the executor run
    /// others, queue for a core again (behind other tenants' turns).
    fn turn(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        let (slots, tenant) = (self.slots.clone(), self.tenant.clone());
        let (held, queued) = (self.held.clone(), self.queued.clone());
        Box::pin(async move {
            let began = Instant::now();
            held.lock().unwrap_or_else(|p| p.into_inner()).take();
            tokio::task::yield_now().await;
            let core = slots.acquire(&tenant).await;
            *held.lock().unwrap_or_else(|p| p.into_inner()) = Some(core);
            queued.fetch_add(began.elapsed().as_nanos() as u64, Ordering::Relaxed);
        })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // An invocation stopped in the middle of a wait for others.
        if let Some(b) = &self.budget
            && self.waiting_pages > 0
        {
            b.budget.done_waiting(self.waiting_pages);
        }
    }
}

/// Counts stores (and so instances) alive in this process.
static LIVE_INSTANCES: AtomicUsize = AtomicUsize::new(0);

struct LiveGuard;

impl LiveGuard {
    fn new() -> Self {
        LIVE_INSTANCES.fetch_add(1, Ordering::SeqCst);
        LiveGuard
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        LIVE_INSTANCES.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How many invocation stores (each holding at most one instance) are
/// alive in this process: hibernated executions hold none.
pub fn live_instances() -> usize {
    LIVE_INSTANCES.load(Ordering::SeqCst)
}

impl Sandbox {
    pub fn limit_hit(&self) -> Option<LimitHit> {
        if self.output.exceeded() {
            return Some(LimitHit::Output);
        }
        self.limit_hit
    }

    pub fn limits(&self) -> InvocationLimits {
        self.limits
    }

    /// The size, bytes, a memory asked to grow to when a limit refused it.
    pub fn memory_refused(&self) -> Option<usize> {
        self.memory_refused
    }

    /// Stops guest code at the next epoch tick at which `stop` holds
    /// ([`LimitHit::Stopped`]); a host call that waits is not stopped.
    pub fn stop_when(&mut self, stop: StopWhen) {
        self.stop = Some(stop);
    }

    /// Counts the invocation's memory against the node's `budget`, as
    /// `tenant`'s: growth past it waits for room (`on_wait` tells when).
    /// Call before instantiating.
    pub fn use_budget(&mut self, budget: MemoryBudget, tenant: Arc<str>, on_wait: WaitHook) {
        self.budget = Some(Budget {
            budget,
            tenant,
            held: Held::none(),
            on_wait,
        });
    }

    /// What the guest wrote to `stream` past its first `from` bytes.
    pub fn output_since(&self, stream: Stream, from: usize) -> Option<bytes::Bytes> {
        self.output.since(stream, from)
    }

    /// The last lines the guest wrote to stderr (a panic message, usually).
    pub fn stderr_tail(&self) -> String {
        let bytes = self.output.contents(Stream::Stderr);
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(3)..].join("\n")
    }

    /// Takes a place among `tenant`'s running invocations, then a core
    /// (waiting for each if all are taken): guest code runs only while it
    /// holds both.
    pub async fn join(&mut self, share: Arc<Semaphore>, cpu: &CpuSlots, tenant: Arc<str>) {
        let began = Instant::now();
        let permit = share.clone().acquire_owned().await.ok();
        self.share = Some((share, permit));
        let hold = CpuHold {
            slots: cpu.clone(),
            tenant,
            held: Arc::new(Mutex::new(None)),
            queued: Arc::new(AtomicU64::new(0)),
        };
        hold.take_core().await;
        self.cpu = Some(hold);
        self.host_time += began.elapsed();
    }

    /// Marks the start of a host call that may wait: its time is not CPU,
    /// and the tenant's place and the core are free for others meanwhile.
    pub fn wait_begin(&mut self) -> Instant {
        if let Some((_, permit)) = &mut self.share {
            *permit = None;
        }
        if let Some(cpu) = &self.cpu {
            cpu.give_core();
        }
        Instant::now()
    }

    /// [`Sandbox::wait_begin`] for a host call that waits for other
    /// invocations (a step, a child): its memory counts as held by a
    /// waiter (see `runtime::memory`), until [`Sandbox::wait_end`].
    pub fn wait_on_guests_begin(&mut self) -> Instant {
        if let Some(b) = &self.budget {
            self.waiting_pages += b.budget.waiting_on_guests(&b.held);
        }
        self.wait_begin()
    }

    /// The end of a wait: takes a place and a core again before guest code
    /// goes on.
    pub async fn wait_end(&mut self, began: Instant) {
        if let Some(b) = &self.budget
            && self.waiting_pages > 0
        {
            b.budget
                .done_waiting(std::mem::take(&mut self.waiting_pages));
        }
        if let Some((share, permit)) = &mut self.share {
            *permit = share.clone().acquire_owned().await.ok();
        }
        if let Some(cpu) = &self.cpu {
            cpu.take_core().await;
        }
        self.host_time += began.elapsed();
    }

    /// Time guest code ran: not waiting in host calls or for a core.
    fn guest_time(&self) -> Duration {
        let queued = self
            .cpu
            .as_ref()
            .map_or(0, |c| c.queued.load(Ordering::Relaxed));
        self.started
            .elapsed()
            .saturating_sub(self.host_time)
            .saturating_sub(Duration::from_nanos(queued))
    }

    /// Wasm pages of linear memory the invocation holds of the node's
    /// budget (none without a budget).
    pub fn memory_pages(&self) -> usize {
        self.budget.as_ref().map_or(0, |b| b.held.pages())
    }

    /// Parks the sandbox of an instance kept for another invocation: its
    /// place and core go back, and its memory counts as held by a waiter
    /// (it runs nothing until [`Sandbox::rearm`] readies it again, or it is
    /// dropped).
    pub fn park(&mut self) {
        self.wait_on_guests_begin();
    }

    /// Readies a parked sandbox for the next invocation of its instance
    /// (of the same tenant), as `next` says: nothing of the last
    /// invocation's limits, output, clock or time is left. Takes a place
    /// and a core again, waiting for each.
    async fn rearm(&mut self, next: Rearm) {
        let Rearm {
            limits,
            seed,
            wall_ms,
            share,
            on_wait,
        } = next;
        self.wall.set(wall_ms);
        if let Some(b) = &mut self.budget {
            b.on_wait = on_wait;
        }
        self.share = Some((share, None));
        self.wait_end(Instant::now()).await;
        self.limits = limits;
        self.limit_hit = None;
        self.memory_refused = None;
        self.output.reset(limits.output_bytes);
        self.random[0].reseed(seed);
        self.random[1].reseed(seed ^ INSECURE);
        if let Some(cpu) = &self.cpu {
            cpu.queued.store(0, Ordering::Relaxed);
        }
        self.started = Instant::now();
        self.host_time = Duration::ZERO;
    }

    /// The WASI view of the sandbox (for [`WasiView`]).
    pub fn wasi(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }

    /// The `wasi:http` view of the sandbox, requests going through
    /// `hooks` (for [`WasiHttpView`]).
    pub fn http<'a>(&'a mut self, hooks: &'a mut dyn WasiHttpHooks) -> WasiHttpCtxView<'a> {
        WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks,
        }
    }
}

#[async_trait::async_trait]
impl ResourceLimiterAsync for Sandbox {
    async fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.memory_bytes {
            self.limit_hit = Some(LimitHit::Memory);
            self.memory_refused = Some(desired);
            return Ok(false);
        }
        let Some(b) = &self.budget else {
            return Ok(true);
        };
        let more = match b.budget.try_grow(&b.tenant, current, desired) {
            Ok(more) => more,
            Err(pages) => {
                // All the invocation holds: it may have several memories.
                let holding = b.held.pages();
                let (budget, tenant, on_wait) =
                    (b.budget.clone(), b.tenant.clone(), b.on_wait.clone());
                on_wait(Some(format!(
                    "guest memory: the node's budget of {} MiB is in use ({} MiB free, {} MiB \
                     needed); waiting for room",
                    budget.bytes() >> 20,
                    budget.available() >> 20,
                    (desired - current) >> 20
                )));
                // Waiting is not CPU time, and frees the core meanwhile.
                let began = self.wait_begin();
                let got = budget.grow(&tenant, pages, holding).await;
                self.wait_end(began).await;
                on_wait(None);
                match got {
                    Some(more) => more,
                    None => {
                        self.limit_hit = Some(LimitHit::NodeMemory);
                        self.memory_refused = Some(desired);
                        return Ok(false);
                    }
                }
            }
        };
        if let Some(b) = &mut self.budget {
            b.held.merge(more);
        }
        Ok(true)
    }

    async fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// A wall clock frozen at the journaled start time of the execution the
/// instance serves, ms (set again when it serves another): guests get real
/// time only through the journaled `now-ms`.
#[derive(Clone)]
struct FrozenWallClock(Arc<AtomicU64>);

impl FrozenWallClock {
    fn new(ms: i64) -> Self {
        Self(Arc::new(AtomicU64::new(ms.max(0) as u64)))
    }

    fn set(&self, ms: i64) {
        self.0.store(ms.max(0) as u64, Ordering::Relaxed);
    }
}

impl HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

struct FrozenMonotonicClock;

impl HostMonotonicClock for FrozenMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A fresh store for one invocation, its data made by `embed` from the
/// sandbox. `seed` makes WASI randomness deterministic per (execution,
/// invocation); `wall_ms` is what the WASI wall clock shows.
pub fn new_store<T: Embedding>(
    engine: &Engine,
    limits: InvocationLimits,
    seed: u64,
    wall_ms: i64,
    embed: impl FnOnce(Sandbox) -> T,
) -> Store<T> {
    let output = CapturedOutput::new(limits.output_bytes);
    let random = [SeededRng::new(seed), SeededRng::new(seed ^ INSECURE)];
    let wall = FrozenWallClock::new(wall_ms);
    let wasi = WasiCtxBuilder::new()
        .stdout(output.stream(Stream::Stdout))
        .stderr(output.stream(Stream::Stderr))
        .wall_clock(wall.clone())
        .monotonic_clock(FrozenMonotonicClock)
        .secure_random(random[0].clone())
        .insecure_random(random[1].clone())
        .insecure_random_seed(u128::from(seed))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build();
    let mut store = Store::new(
        engine,
        embed(Sandbox {
            wasi,
            table: ResourceTable::new(),
            http_ctx: WasiHttpCtx::new(),
            limits,
            limit_hit: None,
            memory_refused: None,
            budget: None,
            output,
            started: Instant::now(),
            host_time: Duration::ZERO,
            share: None,
            cpu: None,
            stop: None,
            waiting_pages: 0,
            random,
            wall,
            _live: LiveGuard::new(),
        }),
    );
    store.limiter_async(|d| d.sandbox() as &mut dyn ResourceLimiterAsync);
    arm(&mut store, &limits);
    store.epoch_deadline_callback(|mut ctx| {
        let data = ctx.data_mut().sandbox();
        if data.stop.as_ref().is_some_and(|stop| stop()) {
            data.limit_hit = Some(LimitHit::Stopped);
            return Ok(UpdateDeadline::Interrupt);
        }
        if data.guest_time() > data.limits.cpu {
            data.limit_hit = Some(LimitHit::Deadline);
            return Ok(UpdateDeadline::Interrupt);
        }
        // Yield at every tick so a busy guest cannot starve the executor,
        // and give its core to whoever waits for one; a guest that took its
        // core just now (a preemption's tick) keeps it a little longer.
        Ok(match &data.cpu {
            Some(cpu) if cpu.young() => UpdateDeadline::Continue(1),
            Some(cpu) => UpdateDeadline::YieldCustom(1, cpu.turn()),
            None => UpdateDeadline::Yield(1),
        })
    });
    store
}

/// Readies a store whose instance served an invocation (and whose sandbox
/// was [parked](Sandbox::park)) for another of its tenant, as `next` says.
/// The embedder swaps its own data.
pub async fn rearm_store<T: Embedding>(store: &mut Store<T>, next: Rearm) {
    let limits = next.limits;
    store.data_mut().sandbox().rearm(next).await;
    arm(store, &limits);
}

/// Gives a store the fuel of an invocation under `limits` and its first
/// epoch deadline.
fn arm<T>(store: &mut Store<T>, limits: &InvocationLimits) {
    if let Some(fuel) = limits.fuel {
        // Only an engine that meters fuel accepts it (see `engine_config`).
        if store.set_fuel(fuel).is_err() {
            tracing::warn!("fuel budget ignored: the engine does not meter fuel");
        }
    }
    store.set_epoch_deadline(1);
}

/// A store for calling `describe` during validation; `fuel`: whether the
/// engine meters fuel.
pub(super) fn describe_store<T: Embedding>(engine: &Engine, fuel: bool) -> Store<T> {
    let mut limits = InvocationLimits::new(1 << 30, Duration::from_secs(10));
    limits.fuel = fuel.then_some(u64::MAX);
    new_store(engine, limits, 0, 0, T::without_host)
}
