//! Driving executions: replaying the journal, running invocations, waiting,
//! hibernating and finishing. See DESIGN.md "Execution semantics".
//!
//! A result payload in the journal is `{"ok": <json>}` or
//! `{"err": {"kind", "message", "details"}}`.

mod calls;
mod host;
mod http;
mod invocation;
pub(crate) mod replay;
mod tenant;

pub use http::HttpHooks;
pub use invocation::Invocation;

use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::model::{
    Claim, Creation, DEFAULT_QUOTAS, ExecutionRecord, MAX_ENGINE_FAILURES, NewExecution,
    PackageRecord, Quotas, Status, StatusChange,
};
use crate::runtime::{LoadedPackage, Runtime, RuntimeConfig, sha256_hex, wit};
use crate::store::{EngineFailure, Feeds, GroupCommitter, JournalWriter, NewEntry, SharedStore};
use invocation::{Entrypoint, Outcome};
use replay::{Interrupt, ReplayIndex, WORKFLOW};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, instrument, warn};

/// Settings of an engine node.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub runtime: RuntimeConfig,
    /// Linear memory limit of one invocation, bytes.
    pub memory_limit_bytes: usize,
    /// CPU deadline of a step attempt unless its options say otherwise.
    pub step_timeout: Duration,
    /// CPU deadline of a workflow invocation.
    pub workflow_timeout: Duration,
    /// Waits longer than this hibernate; shorter ones stay in process.
    pub hibernate_after: Duration,
    /// Lease length of an owned execution; renewed every third of it.
    pub lease: Duration,
    /// How often the scheduler looks for due work in the database.
    pub tick: Duration,
    /// Executions this node drives at once.
    pub max_running: usize,
    /// Quotas and sandbox limits of tenants that set none of their own
    /// (memory and CPU: `None` here means `memory_limit_bytes` and the
    /// step and workflow timeouts).
    pub quotas: Quotas,
    /// After an engine error (not one of user code), an execution runs
    /// again after this long, doubled with each error in a row up to
    /// [`MAX_ENGINE_RETRY`]; after [`MAX_ENGINE_FAILURES`] it fails.
    pub engine_retry: Duration,
}

/// The longest a start waits for its turn under its tenant's start rate.
pub const MAX_START_WAIT: Duration = Duration::from_secs(10);

/// The longest wait before an execution that hit engine errors runs again.
pub const MAX_ENGINE_RETRY: Duration = Duration::from_secs(300);

impl EngineConfig {
    /// Defaults that work: 256 MiB, 60 s per step attempt, hibernate after 2 s.
    pub fn new(cache_dir: std::path::PathBuf) -> Self {
        Self {
            runtime: RuntimeConfig {
                cache_dir,
                max_instances: 1000,
                max_memory_bytes: 1 << 32,
                fuel: false,
                guest_memory_bytes: crate::runtime::MemoryBudget::default_bytes(),
            },
            memory_limit_bytes: 256 << 20,
            step_timeout: Duration::from_secs(60),
            workflow_timeout: Duration::from_secs(30),
            hibernate_after: Duration::from_secs(2),
            lease: Duration::from_secs(5),
            tick: Duration::from_millis(50),
            max_running: 512,
            quotas: DEFAULT_QUOTAS,
            engine_retry: Duration::from_secs(1),
        }
    }
}

/// An error as the WIT `error` record carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct WitError {
    pub kind: String,
    pub message: String,
    pub details: Option<Value>,
}

impl WitError {
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        Self {
            kind: kind.to_owned(),
            message: message.into(),
            details: None,
        }
    }

    pub fn cancelled() -> Self {
        Self::new("cancelled", "the execution was cancelled by an operator")
    }

    pub fn to_json(&self) -> Value {
        json!({ "kind": self.kind, "message": self.message, "details": self.details })
    }

    pub fn from_json(v: &Value) -> Self {
        Self {
            kind: v["kind"].as_str().unwrap_or("error").to_owned(),
            message: v["message"].as_str().unwrap_or_default().to_owned(),
            details: v.get("details").filter(|d| !d.is_null()).cloned(),
        }
    }
}

impl From<wit::Error> for WitError {
    fn from(e: wit::Error) -> Self {
        Self {
            kind: e.kind,
            message: e.message,
            details: e.details.map(|d| parse_payload(&d)),
        }
    }
}

impl From<WitError> for wit::Error {
    fn from(e: WitError) -> Self {
        Self {
            kind: e.kind,
            message: e.message,
            details: e.details.map(|d| d.to_string()),
        }
    }
}

/// JSON text from a guest as a value (kept as a string if it is not JSON).
pub fn parse_payload(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// A journal result payload for a call's outcome.
pub(crate) fn result_payload(r: &Result<Value, WitError>) -> Value {
    match r {
        Ok(v) => json!({ "ok": v }),
        Err(e) => json!({ "err": e.to_json() }),
    }
}

/// The outcome stored in a result payload.
pub(crate) fn parse_result(v: &Value) -> Result<Value, WitError> {
    match v.get("err") {
        Some(e) => Err(WitError::from_json(e)),
        None => Ok(v.get("ok").cloned().unwrap_or(Value::Null)),
    }
}

/// Cancellation of one execution: requested (from the database), delivered
/// (journaled at a suspension point of the workflow).
#[derive(Default)]
pub(crate) struct CancelState {
    requested: AtomicBool,
    delivered: AtomicBool,
    notify: Notify,
}

impl CancelState {
    pub(crate) fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub(crate) fn pending(&self) -> bool {
        self.requested.load(Ordering::SeqCst) && !self.delivered.load(Ordering::SeqCst)
    }

    /// Takes a pending cancellation for delivery (at most once).
    pub(crate) fn take(&self) -> bool {
        self.pending() && !self.delivered.swap(true, Ordering::SeqCst)
    }
}

/// Everything a running execution's invocations share.
pub struct ExecState {
    pub(crate) engine: Arc<Inner>,
    pub(crate) record: ExecutionRecord,
    pub(crate) package: Arc<LoadedPackage>,
    pub(crate) writer: JournalWriter,
    pub(crate) index: Mutex<ReplayIndex>,
    pub(crate) cancel: Arc<CancelState>,
    /// Fan-out steps started with `start-step`, by call seq.
    pub(crate) tasks: Mutex<HashMap<i64, JoinHandle<calls::CallOutcome>>>,
    signals: i64,
    /// The tenant's limits, allow-list, secrets and share.
    pub(crate) sandbox: Arc<tenant::TenantSandbox>,
    /// Fuel burned by the execution's invocations (journaled and live).
    fuel_used: AtomicU64,
}

impl ExecState {
    /// The limits of an invocation that may use `cpu` (the step's or the
    /// workflow's deadline; the tenant's CPU limit caps it).
    pub(crate) fn invocation_limits(&self, cpu: Duration) -> crate::runtime::InvocationLimits {
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

    pub(crate) fn add_fuel(&self, used: u64) {
        self.fuel_used.fetch_add(used, Ordering::SeqCst);
    }

    /// Bytes of `stream` journaled for `invocation` before this run.
    pub(crate) fn output_recorded(
        &self,
        invocation: &str,
        stream: crate::runtime::Stream,
    ) -> usize {
        self.index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .output_recorded(invocation, stream.name())
    }

    /// Refuses a new call once the journal holds the tenant's maximum.
    pub(crate) fn check_journal_room(&self) -> Result<(), Interrupt> {
        let Some(max) = self.sandbox.quotas.max_journal_entries else {
            return Ok(());
        };
        if self.writer.next_seq() > max {
            return Err(Interrupt::Limit {
                kind: "journal",
                message: format!(
                    "the execution reached its limit of {max} journal entries (tenant '{}')",
                    self.sandbox.name
                ),
            });
        }
        Ok(())
    }

    /// Refuses a payload larger than the tenant's maximum.
    pub(crate) fn check_payload(&self, what: &str, len: usize) -> Result<(), WitError> {
        match self.sandbox.quotas.max_payload_bytes {
            Some(max) if len as i64 > max => Err(WitError::new(
                "payload",
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
    pub(crate) store: SharedStore,
    pub(crate) runtime: Runtime,
    pub(crate) committer: GroupCommitter,
    pub(crate) clock: SharedClock,
    pub(crate) config: EngineConfig,
    pub(crate) node_id: String,
    pub(crate) running: Mutex<HashMap<String, Arc<CancelState>>>,
    pub(crate) wake: Notify,
    /// Ids of executions this node finished, for in-process waiters.
    pub(crate) finished: tokio::sync::broadcast::Sender<String>,
    /// Whether the scheduler runs in this process (else starts are left
    /// to whichever node claims them).
    pub(crate) serving: AtomicBool,
    /// Tenants' sandbox settings, read from the store now and then.
    pub(crate) tenants: tenant::TenantCache,
    /// Package records by (tenant, sha256) (immutable once stored).
    packages: Mutex<HashMap<(String, String), PackageRecord>>,
    /// Followed executions' journals (see [`Feeds`]).
    pub(crate) feeds: Feeds,
    /// What executions running here wait for besides their journal (room
    /// in the node's memory budget), with since when: shown by `status`.
    notes: Arc<Mutex<HashMap<String, (String, i64)>>>,
}

impl Inner {
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// What an invocation of execution `id` calls when it starts and stops
    /// waiting for room in the node's memory budget.
    pub(crate) fn memory_wait_hook(self: &Arc<Self>, id: &str) -> crate::runtime::WaitHook {
        let (notes, clock, id) = (self.notes.clone(), self.clock.clone(), id.to_owned());
        Arc::new(move |note: Option<String>| {
            let mut notes = notes.lock().unwrap_or_else(|p| p.into_inner());
            match note {
                Some(note) => {
                    notes.insert(id.clone(), (note, clock.now_ms()));
                }
                None => {
                    notes.remove(&id);
                }
            }
        })
    }
}

/// A Cerebelum engine node: runs executions from a [`crate::store::Store`].
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

/// Package names are 1 to 128 letters, digits, '-', '_' and '.'.
pub fn check_package_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(Error::InvalidInput(format!(
            "invalid package name {:?}: use 1 to 128 letters, digits, '-', '_' and '.'",
            crate::util::shorten(name, 64)
        )));
    }
    Ok(())
}

/// A fresh random-looking id with a prefix, e.g. `ex_1f3a...`.
pub fn new_id(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let a = h.finish();
    h.write_u64(a);
    format!("{prefix}_{:016x}{:08x}", a, h.finish() as u32)
}

impl Engine {
    /// A node on `store`. Must be called inside a tokio runtime.
    pub fn new(store: SharedStore, config: EngineConfig, clock: SharedClock) -> Result<Self> {
        let runtime = Runtime::new(&config.runtime)?;
        let feeds = Feeds::new(store.clone());
        let committer = GroupCommitter::start(store.clone(), clock.clone(), feeds.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                runtime,
                committer,
                clock,
                config,
                node_id: new_id("node"),
                running: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                finished: tokio::sync::broadcast::channel(16 * 1024).0,
                serving: AtomicBool::new(false),
                tenants: tenant::TenantCache::default(),
                packages: Mutex::new(HashMap::new()),
                feeds,
                notes: Arc::default(),
            }),
        })
    }

    pub fn store(&self) -> &SharedStore {
        &self.inner.store
    }

    /// The node's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The engine's clock, ms since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.inner.now_ms()
    }

    /// Validates and stores a package of `tenant`. The same bytes under the
    /// same name return the existing version; under another name they are
    /// another package (the bytes are stored once).
    pub async fn upload(&self, tenant: &str, name: &str, bytes: Vec<u8>) -> Result<PackageRecord> {
        check_package_name(name)?;
        let sha = sha256_hex(&bytes);
        let package = self.inner.runtime.validate(&sha, bytes.clone()).await?;
        let info = serde_json::to_value(&package.info)
            .map_err(|e| Error::Runtime(format!("encoding package info: {e}")))?;
        self.inner
            .store
            .put_package(tenant, name, &sha, &bytes, &info, self.inner.now_ms())
            .await
    }

    /// Starts an execution of `workflow` of `tenant`'s package with `sha256`
    /// (the newest package with those bytes, if several have them).
    pub async fn start(
        &self,
        tenant: &str,
        sha256: &str,
        workflow: &str,
        input: &str,
        idempotency_key: Option<String>,
    ) -> Result<ExecutionRecord> {
        let package = self.package(tenant, sha256).await?;
        self.start_package(&package, workflow, input, idempotency_key)
            .await
            .map(|(record, _)| record)
    }

    /// Starts an execution of `workflow` of the package version `package`;
    /// also tells whether the execution is new (`false`: the idempotency
    /// key returned an earlier one).
    pub async fn start_package(
        &self,
        package: &PackageRecord,
        workflow: &str,
        input: &str,
        idempotency_key: Option<String>,
    ) -> Result<(ExecutionRecord, bool)> {
        let input: Value = serde_json::from_str(input).map_err(|e| {
            Error::InvalidInput(format!(
                "the input is not valid JSON ({e}); pass e.g. --input '{{\"name\": \"web-1\"}}'"
            ))
        })?;
        let sha256 = package.sha256.as_str();
        self.admit_start(&package.tenant).await?;
        match self.inner.runtime.loaded(sha256) {
            Some(loaded) => loaded.info.check_workflow(workflow)?,
            None => {
                let info: crate::runtime::PackageInfo =
                    serde_json::from_value(package.info.clone())
                        .map_err(|e| Error::Schema(format!("stored package info: {e}")))?;
                info.check_workflow(workflow)?;
            }
        }
        let inner = &self.inner;
        let id = new_id("ex");
        // Drive it here at once if this node has room: no claim round trip.
        let cancel = Arc::new(CancelState::default());
        let owned = {
            let mut running = inner.running.lock().unwrap_or_else(|p| p.into_inner());
            let room =
                inner.serving.load(Ordering::SeqCst) && running.len() < inner.config.max_running;
            if room {
                running.insert(id.clone(), cancel.clone());
            }
            room
        };
        let now = inner.now_ms();
        let lease_until = now + inner.config.lease.as_millis() as i64;
        let new = NewExecution {
            id: id.clone(),
            tenant: package.tenant.clone(),
            package_name: package.name.clone(),
            package_version: package.version,
            package_sha256: sha256.to_owned(),
            workflow: workflow.to_owned(),
            input,
            idempotency_key,
        };
        let owner = owned.then_some((inner.node_id.as_str(), lease_until));
        let created = if new.idempotency_key.is_some() {
            inner.store.create_execution(new, now, owner).await
        } else {
            // Batched with the journal writes of the group commit.
            let creation = Creation {
                new,
                owner: owner.map(|(node, lease)| (node.to_owned(), lease)),
            };
            let record = creation.record(package, now);
            inner.committer.create(creation).await.map(|()| record)
        };
        let fresh = matches!(&created, Ok(r) if r.id == id);
        if owned && !fresh {
            inner
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        }
        let record = created?;
        if owned && fresh {
            let claim = Claim {
                execution_id: id,
                epoch: record.epoch,
                signals: 0,
                resumed: false,
            };
            tokio::spawn(drive_registered(
                inner.clone(),
                claim,
                cancel,
                Some(record.clone()),
            ));
        } else {
            inner.wake.notify_one();
        }
        Ok((record, fresh))
    }

    /// Waits for `tenant`'s turn to start an execution under its start
    /// rate, which applies while other tenants have work on this node (a
    /// tenant alone is never slowed); refuses if the wait would be longer
    /// than [`MAX_START_WAIT`].
    async fn admit_start(&self, tenant: &str) -> Result<()> {
        let sandbox = self.inner.tenant_sandbox(tenant).await?;
        let Some(rate) = &sandbox.start_rate else {
            return Ok(());
        };
        if !self.inner.runtime.cpu().others_active(tenant) {
            return Ok(());
        }
        let wait = rate.take();
        if wait > MAX_START_WAIT {
            rate.give_back();
            return Err(Error::QuotaExceeded(format!(
                "tenant '{tenant}' may start {} executions a second (max start rate) and has \
                 more starts waiting than {} s of them; slow down",
                sandbox.quotas.max_start_rate.unwrap_or_default(),
                MAX_START_WAIT.as_secs()
            )));
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// `tenant`'s package with `sha256` (cached: package versions never
    /// change).
    async fn package(&self, tenant: &str, sha256: &str) -> Result<PackageRecord> {
        let key = (tenant.to_owned(), sha256.to_owned());
        let cached = self
            .inner
            .packages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(p) = cached {
            return Ok(p);
        }
        let package = self.inner.store.package(tenant, sha256).await?;
        self.inner
            .packages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, package.clone());
        Ok(package)
    }

    /// Runs the scheduler until `shutdown` resolves.
    pub async fn serve(&self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        crate::scheduler::run(self.inner.clone(), shutdown).await
    }

    /// The journal feeds of this node: follow an execution's journal as
    /// it is written (one store reader per execution, whoever follows).
    pub fn feeds(&self) -> &Feeds {
        &self.inner.feeds
    }

    /// What execution `id` waits for on this node besides its journal,
    /// and for how long (e.g. room in the node's guest memory budget).
    pub fn note(&self, id: &str) -> Option<String> {
        let notes = self.inner.notes.lock().unwrap_or_else(|p| p.into_inner());
        let (note, since) = notes.get(id)?;
        let secs = (self.inner.now_ms() - since).max(0) as f64 / 1000.0;
        Some(format!("{note} (for {secs:.1} s)"))
    }

    /// Ids of the executions this node finishes from now on.
    pub fn finished(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.inner.finished.subscribe()
    }

    /// Waits until execution `id` is completed, failed or cancelled (by
    /// this node, promptly, or by another, within 200 ms).
    pub async fn wait_finished(&self, id: &str) -> Result<ExecutionRecord> {
        let mut finished = self.inner.finished.subscribe();
        loop {
            let record = self.inner.store.execution(id).await?;
            if record.status.is_terminal() {
                return Ok(record);
            }
            let deadline = tokio::time::sleep(Duration::from_millis(200));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    msg = finished.recv() => match msg {
                        Ok(done) if done != id => continue,
                        _ => break,
                    },
                    _ = &mut deadline => break,
                }
            }
        }
    }

    /// Runs the scheduler until execution `id` is completed, failed or cancelled.
    pub async fn run_until_done(&self, id: &str) -> Result<ExecutionRecord> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let serve = self.serve(async {
            let _ = done_rx.await;
        });
        let waited = async {
            let r = self.wait_finished(id).await;
            let _ = done_tx.send(());
            r
        };
        let (served, record) = tokio::join!(serve, waited);
        served?;
        record
    }
}

/// Drives one claimed execution until it finishes, hibernates or is lost.
pub(crate) async fn drive(inner: Arc<Inner>, claim: Claim) {
    let cancel = Arc::new(CancelState::default());
    inner
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(claim.execution_id.clone(), cancel.clone());
    drive_registered(inner, claim, cancel, None).await;
}

/// [`drive`] for an execution already in `running`; `fresh` is the record
/// of an execution this node just created (its journal is empty).
#[instrument(skip_all, fields(execution_id = %claim.execution_id))]
async fn drive_registered(
    inner: Arc<Inner>,
    claim: Claim,
    cancel: Arc<CancelState>,
    fresh: Option<ExecutionRecord>,
) {
    let id = claim.execution_id.clone();
    match drive_claimed(&inner, &claim, cancel, fresh).await {
        Ok(()) => {}
        Err(Error::LostOwnership(_)) => lost_ownership(),
        Err(e) => {
            warn!(error = %e, "execution stopped by an engine error; it resumes from its journal later");
            let failure = EngineFailure {
                error: crate::util::shorten(&e.to_string(), 1000),
                now_ms: inner.now_ms(),
                base_delay_ms: inner.config.engine_retry.as_millis() as i64,
                max_delay_ms: MAX_ENGINE_RETRY.as_millis() as i64,
            };
            if let Err(e) = inner.store.abandon(&id, claim.epoch, &failure).await {
                warn!(error = %e, "could not release the execution");
            }
        }
    }
    inner
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    inner.wake.notify_one();
}

/// The journal entry and status change that end an execution.
fn finish(
    status: Status,
    kind: &str,
    result: Option<Value>,
    error: Option<Value>,
) -> (Vec<NewEntry>, StatusChange) {
    let payload = json!({ "result": result, "error": error });
    (
        vec![NewEntry {
            invocation: "engine".into(),
            kind: kind.into(),
            ref_seq: None,
            args_hash: None,
            payload,
        }],
        StatusChange::Finished {
            status,
            result,
            error,
        },
    )
}

/// Another node claimed the execution (its lease ran out here): what this
/// node was about to append was refused, and it lets the execution go.
fn lost_ownership() {
    warn!("lost ownership: another node took over the execution; dropping it here");
}

async fn drive_claimed(
    inner: &Arc<Inner>,
    claim: &Claim,
    cancel: Arc<CancelState>,
    fresh: Option<ExecutionRecord>,
) -> Result<()> {
    let (record, entries) = match fresh {
        Some(record) => (record, Vec::new()),
        None => {
            let record = inner.store.execution(&claim.execution_id).await?;
            let entries = inner.store.journal(&record.id, 0).await?;
            (record, entries)
        }
    };
    if record.cancel_requested {
        cancel.request();
    }
    let last_seq = entries.last().map(|e| e.seq).unwrap_or(0);
    if record.engine_failures >= MAX_ENGINE_FAILURES {
        // Retried often enough: an operator looks at the cause and retries it.
        let error = WitError::new(
            "engine",
            format!(
                "the engine failed {} times in a row running this execution, the last time \
                 with: {}; fix the cause, then `cerebelum retry {}`",
                record.engine_failures,
                record.engine_error.as_deref().unwrap_or("(no message)"),
                record.id
            ),
        );
        let writer = inner
            .committer
            .writer(&record.tenant, &record.id, claim.epoch, last_seq);
        let (entries, change) = finish(Status::Failed, "failed", None, Some(error.to_json()));
        writer.commit(entries, Vec::new(), Some(change)).await?;
        warn!("execution failed after too many engine errors");
        let _ = inner.finished.send(record.id.clone());
        return Ok(());
    }
    let store = inner.store.clone();
    let sha = record.package_sha256.clone();
    let package = inner
        .runtime
        .load(&record.package_sha256, || async move {
            store.package_bytes(&sha).await
        })
        .await?;
    let sandbox = inner.tenant_sandbox(&record.tenant).await?;
    // The tenant is entitled to its share of the cores while this runs.
    let _active = inner.runtime.cpu().activate(&sandbox.name);
    let writer = inner
        .committer
        .writer(&record.tenant, &record.id, claim.epoch, last_seq)
        .redacting(sandbox.secret_values.clone());
    let mut index = ReplayIndex::build(&entries);
    index.resumed = claim.resumed;
    let fuel_used = index.fuel_used;
    if index.cancel_delivered {
        cancel.delivered.store(true, Ordering::SeqCst);
    }
    if entries.is_empty() {
        writer
            .push(NewEntry {
                invocation: "engine".into(),
                kind: "started".into(),
                ref_seq: None,
                args_hash: None,
                payload: json!({ "workflow": record.workflow, "input": record.input, "package": record.package_sha256 }),
            })
            .await?;
    }
    info!(replaying = entries.len(), "driving execution");
    let exec = Arc::new(ExecState {
        engine: inner.clone(),
        package,
        writer: writer.clone(),
        index: Mutex::new(index),
        cancel,
        tasks: Mutex::new(HashMap::new()),
        signals: claim.signals,
        record,
        sandbox,
        fuel_used: AtomicU64::new(fuel_used),
    });
    let input = exec.record.input.to_string();
    let outcome = invocation::run(
        &exec,
        WORKFLOW.to_owned(),
        1,
        inner.config.workflow_timeout,
        Entrypoint::Workflow {
            name: &exec.record.workflow,
            input: &input,
        },
    )
    .await;
    for (_, task) in exec.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain() {
        task.abort();
    }
    let outcome = match outcome {
        Outcome::Returned(Ok(text)) => {
            match exec.check_payload("the workflow's result", text.len()) {
                Ok(()) => Outcome::Returned(Ok(text)),
                Err(e) => Outcome::Returned(Err(e)),
            }
        }
        other => other,
    };
    let (entries, change) = match outcome {
        Outcome::Returned(Ok(text)) => finish(
            Status::Completed,
            "completed",
            Some(parse_payload(&text)),
            None,
        ),
        Outcome::Returned(Err(e)) => {
            if exec.cancel.delivered.load(Ordering::SeqCst) {
                finish(Status::Cancelled, "cancelled", None, Some(e.to_json()))
            } else {
                finish(Status::Failed, "failed", None, Some(e.to_json()))
            }
        }
        Outcome::Interrupted(Interrupt::Nondeterminism(message)) => finish(
            Status::Failed,
            "failed",
            None,
            Some(WitError::new("nondeterminism", message).to_json()),
        ),
        Outcome::Interrupted(Interrupt::Suspend { wake_at }) => {
            writer
                .commit(
                    Vec::new(),
                    Vec::new(),
                    Some(StatusChange::Waiting {
                        wake_at_ms: wake_at,
                        seen_signals: exec.signals,
                    }),
                )
                .await?;
            info!(?wake_at, "execution hibernated");
            return Ok(());
        }
        Outcome::Interrupted(Interrupt::LostOwnership) => {
            lost_ownership();
            return Ok(());
        }
        Outcome::Interrupted(Interrupt::Limit { kind, message }) => finish(
            Status::Failed,
            "failed",
            None,
            Some(WitError::new(kind, message).to_json()),
        ),
        Outcome::Interrupted(Interrupt::Infra(message)) => return Err(Error::Runtime(message)),
    };
    let status = match &change {
        StatusChange::Finished { status, .. } => *status,
        StatusChange::Waiting { .. } => Status::Waiting,
    };
    writer.commit(entries, Vec::new(), Some(change)).await?;
    info!(%status, "execution finished");
    let _ = inner.finished.send(exec.record.id.clone());
    Ok(())
}
