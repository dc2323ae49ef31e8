//! The wasmtime side: one engine configuration, the on-disk cache of
//! compiled components, loaded packages (one `InstancePre` each) and the
//! per-invocation store with its limits.

mod cache;
mod cpu;
mod memory;
mod output;
mod sandbox;

pub use cpu::CpuSlots;
pub use memory::{MAX_WAIT as MEMORY_WAIT, MemoryBudget, WorkflowAdmission};
pub use output::{CapturedOutput, Stream};
pub use sandbox::{
    DEFAULT_OUTPUT_BYTES, Embedding, InvocationLimits, LimitHit, Rearm, Sandbox, StopWhen,
    WaitHook, live_instances, new_store, rearm_store,
};

use crate::error::{Error, Result};
use crate::model::{
    CallError, ErrorKind, PackageInfo, Placement, RetryPolicy, StepInfo, StepOptions, WorkflowInfo,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Host bindings of the `cerebelum:workflow/engine-package` world: the package
/// world without `wasi:http`, which wasmtime-wasi-http provides.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "engine-package",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

use bindings::EnginePackage as PackageWorld;
pub use bindings::EnginePackagePre as PackagePre;
pub use bindings::cerebelum::workflow::types as wit;

/// How often the epoch ticks. CPU deadlines are checked at this grain, and
/// guest code gives its core to others at each tick: the longest another
/// invocation waits for a core is about one tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Settings of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached, keyed by sha256 and engine.
    pub cache_dir: PathBuf,
    /// Instances that may exist at once (pooling allocator slots).
    pub max_instances: u32,
    /// Largest linear memory one instance may reserve, in bytes.
    pub max_memory_bytes: usize,
    /// Meter fuel (wasm instructions), so fuel budgets can be enforced;
    /// it changes the compiled code and slows CPU-bound guests.
    pub fuel: bool,
    /// Linear memory all live instances may hold together, bytes (see
    /// [`MemoryBudget`]).
    pub guest_memory_bytes: usize,
}

/// The call stack of wasm code in one invocation, bytes.
pub const MAX_WASM_STACK: usize = 512 << 10;

/// Bytes of each linear memory a pool slot keeps resident when its
/// instance ends (see [`engine_config`]): what a Rust guest touches, and
/// a Python guest's hottest pages. Through `serve` (`--bench api`, five
/// alternating runs, 2026-11-28) it took a Rust W3 from 3.00 to 2.34 ms
/// p50, W2 from 0.54 to 0.48 s, a durable Python step from 1.85 to
/// 1.65 ms; 16 and 64 MiB gained less for Rust (the scan of a larger
/// region costs every instance) and keep more memory per slot. A slot
/// holds at most this much once its instance ended: the server's RSS
/// after the bench was ~10–20 MB higher.
pub const LINEAR_MEMORY_KEEP_RESIDENT: usize = 2 << 20;

/// Builds the one wasmtime configuration. Everything that changes the
/// compiled artifact is decided here, so cached artifacts always match.
pub fn engine_config(config: &RuntimeConfig) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.consume_fuel(config.fuel);
    c.max_wasm_stack(MAX_WASM_STACK);
    c.cranelift_opt_level(wasmtime::OptLevel::Speed);
    // A guest with debug info (a debug build) keeps it, so a replay that
    // diverges names the line of the call (only then is it read).
    c.wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable);
    // `CEREBELUM_PERFMAP=1` writes /tmp/perf-PID.map, so `perf report`
    // names the guest's functions (CPython's, inside a Python package).
    if std::env::var_os("CEREBELUM_PERFMAP").is_some_and(|v| v == "1") {
        c.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let mut pool = PoolingAllocationConfig::default();
    let instances = config.max_instances.max(8);
    // A componentize-py component instantiates ~15 core modules (libc,
    // libpython, adapters, the app); a Rust one 2-3.
    pool.total_component_instances(instances)
        .total_core_instances(instances * 24)
        .total_memories(instances * 2)
        .total_tables(instances * 8)
        .total_stacks(instances)
        .max_memory_size(config.max_memory_bytes)
        .max_component_instance_size(16 << 20)
        .max_core_instance_size(16 << 20)
        .table_elements(100_000)
        // Reset the first pages of reused tables and stacks with memset
        // instead of madvise: fewer page faults per instantiation.
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(64 << 10)
        // Linear memories likewise, up to LINEAR_MEMORY_KEEP_RESIDENT,
        // with Linux's PAGEMAP_SCAN (6.7 and later) finding the pages an
        // instance wrote, so only those are reset (from the image, or to
        // zero) and the rest stay mapped: the next instance in the slot
        // takes no page fault there, and no madvise shoots down TLBs.
        .linear_memory_keep_resident(LINEAR_MEMORY_KEEP_RESIDENT)
        .pagemap_scan(wasmtime::Enabled::Auto);
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    c
}

/// What packages are linked with: WASI p2 (without ambient authority, see
/// the sandbox), `wasi:http` through the embedder's hooks, and the
/// Cerebelum host, all implemented by the embedder's store data `T`.
pub fn linker<T: Embedding>(engine: &Engine) -> Result<Linker<T>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| Error::Runtime(format!("linking WASI: {e}")))?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(|e| Error::Runtime(format!("linking WASI HTTP: {e}")))?;
    PackageWorld::add_to_linker::<_, HasSelf<T>>(&mut linker, |d| d)
        .map_err(|e| Error::Runtime(format!("linking the host: {e}")))?;
    Ok(linker)
}

impl From<wit::RetryPolicy> for RetryPolicy {
    fn from(p: wit::RetryPolicy) -> Self {
        Self {
            max_attempts: p.max_attempts.max(1),
            initial_backoff_ms: p.initial_backoff_ms,
            multiplier: p.multiplier,
            max_backoff_ms: p.max_backoff_ms,
            non_retryable: p.non_retryable,
        }
    }
}

impl From<wit::StepOptions> for StepOptions {
    fn from(o: wit::StepOptions) -> Self {
        Self {
            retry: o.retry.map(Into::into),
            attempt_timeout_ms: o.attempt_timeout_ms,
            worker: None,
            schedule_to_start_ms: None,
            heartbeat_ms: None,
        }
    }
}

impl From<wit::Error> for CallError {
    fn from(e: wit::Error) -> Self {
        Self {
            kind: ErrorKind::parse(&e.kind),
            message: e.message,
            // Details are JSON text; kept as a string if they are not JSON.
            details: e
                .details
                .map(|d| serde_json::from_str(&d).unwrap_or(serde_json::Value::String(d))),
        }
    }
}

impl From<CallError> for wit::Error {
    fn from(e: CallError) -> Self {
        Self {
            kind: e.kind.as_str().to_owned(),
            message: e.message,
            details: e.details.map(|d| d.to_string()),
        }
    }
}

impl From<wit::PackageInfo> for PackageInfo {
    fn from(info: wit::PackageInfo) -> Self {
        Self {
            workflows: info
                .workflows
                .into_iter()
                .map(|w| WorkflowInfo {
                    name: w.name,
                    description: w.description,
                })
                .collect(),
            steps: info
                .steps
                .into_iter()
                .map(|s| StepInfo {
                    name: s.name,
                    description: s.description,
                    options: s.options.into(),
                })
                .collect(),
        }
    }
}

/// A package ready to instantiate with store data `T`.
pub struct LoadedPackage<T: 'static> {
    pub sha256: String,
    pub pre: PackagePre<T>,
    pub info: PackageInfo,
    /// Wasm pages of guest memory its last workflow instance held when it
    /// started (0 before the first): what the next one is admitted by
    /// ([`MemoryBudget::admit_workflow`]).
    pub workflow_pages: std::sync::atomic::AtomicUsize,
}

/// The wasmtime engine, its linker and the packages loaded so far, for
/// invocations whose store data is `T` (the embedder's, see [`Embedding`]).
pub struct Runtime<T: Embedding> {
    engine: Engine,
    linker: Linker<T>,
    cache: cache::ComponentCache,
    loaded: Mutex<HashMap<String, Arc<LoadedPackage<T>>>>,
    ticker_stop: Arc<AtomicBool>,
    fuel: bool,
    cpu: CpuSlots,
    memory: MemoryBudget,
}

impl<T: Embedding> Runtime<T> {
    pub fn new(config: &RuntimeConfig) -> Result<Self> {
        let engine = Engine::new(&engine_config(config))
            .map_err(|e| Error::Runtime(format!("configuring wasmtime: {e}")))?;
        let linker = linker(&engine)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("cerebelum-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| Error::io("starting the epoch thread", e))?;
        }
        // A tenant short of its share of cores makes running guests yield
        // at once: an epoch tick out of turn.
        let preempt: cpu::Preempt = {
            let engine = engine.clone();
            Arc::new(move || engine.increment_epoch())
        };
        Ok(Self {
            cache: cache::ComponentCache::new(config.cache_dir.clone(), &engine),
            engine,
            linker,
            loaded: Mutex::new(HashMap::new()),
            ticker_stop,
            fuel: config.fuel,
            cpu: CpuSlots::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
                Some(preempt),
            ),
            memory: MemoryBudget::new(config.guest_memory_bytes),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The cores guest code of this node takes turns on.
    pub fn cpu(&self) -> &CpuSlots {
        &self.cpu
    }

    /// The linear memory all live instances of this node may hold.
    pub fn memory(&self) -> &MemoryBudget {
        &self.memory
    }

    /// The package with `sha256`, compiled (or loaded from the cache) and
    /// checked against the world. `bytes` is called only if it is not yet
    /// loaded in this process.
    pub async fn load<F, Fut>(&self, sha256: &str, bytes: F) -> Result<Arc<LoadedPackage<T>>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>>>,
    {
        if let Some(p) = self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sha256)
        {
            return Ok(p.clone());
        }
        let (component, known) = match self.cache.get(sha256)? {
            Some(c) => (c, self.cache.info(sha256)),
            None => {
                let bytes = bytes().await?;
                (self.compile_and_cache(sha256, bytes).await?, None)
            }
        };
        let package = Arc::new(self.link(sha256, &component, known.clone()).await?);
        if known.is_none() {
            self.cache.put_info(sha256, &package.info)?;
        }
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sha256.to_owned(), package.clone());
        Ok(package)
    }

    /// Whether loading the package with `sha256` compiles it (neither
    /// loaded here nor in the on-disk cache): seconds for a Python one.
    pub fn needs_compiling(&self, sha256: &str) -> bool {
        self.loaded(sha256).is_none() && !self.cache.has(sha256)
    }

    /// The package with `sha256` if this process has loaded it.
    pub fn loaded(&self, sha256: &str) -> Option<Arc<LoadedPackage<T>>> {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sha256)
            .cloned()
    }

    /// Validates `bytes` as a Cerebelum package, caching its compiled form:
    /// a clear error says what is wrong if it is not one.
    pub async fn validate(&self, sha256: &str, bytes: Vec<u8>) -> Result<Arc<LoadedPackage<T>>> {
        check_header(&bytes)?;
        let bytes_for_load = bytes;
        self.load(sha256, || async move { Ok(bytes_for_load) })
            .await
    }

    async fn compile_and_cache(&self, sha256: &str, bytes: Vec<u8>) -> Result<Component> {
        check_header(&bytes)?;
        let engine = self.engine.clone();
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| Error::Runtime(format!("compiler task failed: {e}")))?
            .map_err(|e| {
                Error::InvalidInput(format!("the file is not a valid component: {e:#}"))
            })?;
        self.cache.put(sha256, &component)?;
        Ok(component)
    }

    /// Links `component`; calls its `describe` unless `known` (from the
    /// cache) already says what it returns.
    async fn link(
        &self,
        sha256: &str,
        component: &Component,
        known: Option<PackageInfo>,
    ) -> Result<LoadedPackage<T>> {
        let pre = self.linker.instantiate_pre(component).map_err(|e| {
            Error::InvalidInput(format!(
                "the component imports something Cerebelum does not provide (only \
                 cerebelum:workflow/host and WASI p2 are available): {e:#}"
            ))
        })?;
        let pre = PackagePre::new(pre).map_err(|e| {
            Error::InvalidInput(format!(
                "the component does not implement the cerebelum:workflow/package world \
                 (it must export cerebelum:workflow/guest@0.1.0 with describe, run-workflow \
                 and run-step): {e:#}"
            ))
        })?;
        if let Some(info) = known {
            return Ok(LoadedPackage {
                sha256: sha256.to_owned(),
                pre,
                info,
                workflow_pages: Default::default(),
            });
        }
        let mut store = sandbox::describe_store::<T>(&self.engine, self.fuel);
        let instance = pre
            .instance_pre()
            .instantiate_async(&mut store)
            .await
            .map_err(|e| {
                Error::InvalidInput(format!("instantiating the component failed: {e:#}"))
            })?;
        let package = PackageWorld::new(&mut store, &instance).map_err(|e| {
            Error::InvalidInput(format!("the component's exports do not match: {e:#}"))
        })?;
        let mut info: PackageInfo = package
            .cerebelum_workflow_guest()
            .call_describe(&mut store)
            .await
            .map_err(|e| Error::InvalidInput(format!("the package's describe() failed: {e:#}")))?
            .into();
        info.place(worker_steps(&mut store, &instance).await?)?;
        Ok(LoadedPackage {
            sha256: sha256.to_owned(),
            pre,
            info,
            workflow_pages: Default::default(),
        })
    }
}

/// The interface that says where steps run; optional (see the WIT).
const PLACEMENT: &str = "cerebelum:workflow/placement@0.1.0";

/// `placement.worker-step` of the WIT.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(record)]
struct WorkerStep {
    #[component(name = "step")]
    step: String,
    #[component(name = "queue")]
    queue: String,
    #[component(name = "schedule-to-start-ms")]
    schedule_to_start_ms: Option<u64>,
    #[component(name = "heartbeat-ms")]
    heartbeat_ms: Option<u64>,
}

/// What the package's `placement` export answers, or nothing if it has none.
async fn worker_steps<T: Send>(
    store: &mut wasmtime::Store<T>,
    instance: &wasmtime::component::Instance,
) -> Result<Vec<Placement>> {
    let Some(interface) = instance.get_export_index(&mut *store, None, PLACEMENT) else {
        return Ok(Vec::new());
    };
    let bad = |e: String| {
        Error::InvalidInput(format!(
            "the package exports {PLACEMENT} but not as the contract defines it \
             (worker-steps: func() -> list<worker-step>): {e}"
        ))
    };
    let func = instance
        .get_export_index(&mut *store, Some(&interface), "worker-steps")
        .ok_or_else(|| bad("it has no function worker-steps".into()))?;
    let func = instance
        .get_typed_func::<(), (Vec<WorkerStep>,)>(&mut *store, &func)
        .map_err(|e| bad(format!("{e:#}")))?;
    let (steps,) = func
        .call_async(&mut *store, ())
        .await
        .map_err(|e| Error::InvalidInput(format!("the package's worker-steps() failed: {e:#}")))?;
    Ok(steps
        .into_iter()
        .map(|s| Placement {
            step: s.step,
            queue: s.queue,
            schedule_to_start_ms: s.schedule_to_start_ms,
            heartbeat_ms: s.heartbeat_ms,
        })
        .collect())
}

impl<T: Embedding> Drop for Runtime<T> {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Tells a core module or a non-wasm file from a component, with advice.
fn check_header(bytes: &[u8]) -> Result<()> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(Error::InvalidInput(
            "the file is not WebAssembly (it does not start with \\0asm); build the package \
             with `cargo build --target wasm32-wasip2` or componentize-py"
                .into(),
        ));
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(Error::InvalidInput(
            "the file is a core WebAssembly module, not a component; build it for the \
             wasm32-wasip2 target (`cargo build --target wasm32-wasip2`), which emits a component"
                .into(),
        ));
    }
    Ok(())
}

/// sha256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_tell_modules_from_components() {
        assert!(
            check_header(b"hello world")
                .unwrap_err()
                .to_string()
                .contains("not WebAssembly")
        );
        let core = check_header(b"\0asm\x01\0\0\0").unwrap_err().to_string();
        assert!(core.contains("core WebAssembly module"), "{core}");
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
