//! The per-invocation store: WASI without ambient authority (no files, no
//! environment, no sockets; clocks and randomness deterministic per
//! invocation), a memory limit and a CPU deadline.

use crate::executor::Invocation;
use rand::SeedableRng;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView,
    WasiView,
};

/// Captured stdout/stderr per invocation (bytes each).
const OUTPUT_CAPACITY: usize = 1 << 20;

/// Limits of one invocation.
#[derive(Debug, Clone, Copy)]
pub struct InvocationLimits {
    /// Largest linear memory, bytes.
    pub memory_bytes: usize,
    /// CPU time the guest may run (time spent waiting in host calls is not
    /// counted).
    pub cpu: Duration,
}

/// Why an invocation was stopped by the sandbox, if it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Memory,
    Deadline,
}

/// The data of one invocation's `Store`.
pub struct StoreData {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: InvocationLimits,
    limit_hit: Option<LimitHit>,
    stderr: MemoryOutputPipe,
    started: Instant,
    host_time: Duration,
    /// The journal-backed host of this invocation; `None` for `describe`.
    pub(crate) host: Option<Invocation>,
    _live: LiveGuard,
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

impl StoreData {
    pub fn limit_hit(&self) -> Option<LimitHit> {
        self.limit_hit
    }

    pub fn limits(&self) -> InvocationLimits {
        self.limits
    }

    /// The last lines the guest wrote to stderr (a panic message, usually).
    pub fn stderr_tail(&self) -> String {
        let bytes = self.stderr.contents();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(3)..].join("\n")
    }

    /// Marks the start of a host call that may wait: its time is not CPU.
    pub fn wait_begin(&self) -> Instant {
        Instant::now()
    }

    pub fn wait_end(&mut self, began: Instant) {
        self.host_time += began.elapsed();
    }

    fn guest_time(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.host_time)
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for StoreData {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.memory_bytes {
            self.limit_hit = Some(LimitHit::Memory);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// A wall clock frozen at the invocation's journaled start time: guests get
/// real time only through the journaled `now-ms`.
struct FrozenWallClock(Duration);

impl HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        self.0
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

/// A fresh store for one invocation. `seed` makes WASI randomness
/// deterministic per (execution, invocation); `wall_ms` is what the WASI
/// wall clock shows.
pub fn new_store(
    engine: &Engine,
    limits: InvocationLimits,
    host: Option<Invocation>,
    seed: u64,
    wall_ms: i64,
) -> Store<StoreData> {
    let stderr = MemoryOutputPipe::new(OUTPUT_CAPACITY);
    let wasi = WasiCtxBuilder::new()
        .stdout(MemoryOutputPipe::new(OUTPUT_CAPACITY))
        .stderr(stderr.clone())
        .wall_clock(FrozenWallClock(
            Duration::from_millis(wall_ms.max(0) as u64),
        ))
        .monotonic_clock(FrozenMonotonicClock)
        .secure_random(rand::rngs::StdRng::seed_from_u64(seed))
        .insecure_random(rand::rngs::StdRng::seed_from_u64(
            seed ^ 0x9e37_79b9_7f4a_7c15,
        ))
        .insecure_random_seed(u128::from(seed))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build();
    let mut store = Store::new(
        engine,
        StoreData {
            wasi,
            table: ResourceTable::new(),
            limits,
            limit_hit: None,
            stderr,
            started: Instant::now(),
            host_time: Duration::ZERO,
            host,
            _live: LiveGuard::new(),
        },
    );
    store.limiter(|d| d as &mut dyn ResourceLimiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        let data = ctx.data_mut();
        if data.guest_time() > data.limits.cpu {
            data.limit_hit = Some(LimitHit::Deadline);
            return Ok(UpdateDeadline::Interrupt);
        }
        // Yield at every tick so a busy guest cannot starve the executor.
        Ok(UpdateDeadline::Yield(1))
    });
    store
}

/// A store for calling `describe` during validation.
pub(super) fn describe_store(engine: &Engine) -> Store<StoreData> {
    new_store(
        engine,
        InvocationLimits {
            memory_bytes: 1 << 30,
            cpu: Duration::from_secs(10),
        },
        None,
        0,
        0,
    )
}
