//! Driving executions: replaying the journal, running invocations, waiting,
//! hibernating and finishing. See DESIGN.md "Execution semantics".
//!
//! [`Engine`] is the façade: uploads, starts, waits. The rest is
//! crate-private: `drive` drives one claimed execution, `scheduler`
//! claims due ones, `host` routes user code's host calls to `calls` (one
//! module per durable call) and `http` (outbound requests), `replay`
//! indexes the journal, `state` holds what running executions share,
//! `tenant` the tenants' sandbox settings.

mod calls;
mod drive;
mod guest;
mod host;
mod http;
mod idle;
mod invocation;
pub mod replay;
mod replay_check;
mod scheduler;
mod state;
mod tenant;
mod worker;

pub use guest::GuestData;
pub use replay_check::{ReplayChecker, ReplayReport, Scratch};
pub use worker::TaskSignals;

use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::model::{DEFAULT_QUOTAS, ExecutionRecord, NewExecution, PackageRecord, Quotas};
use crate::runtime::{RuntimeConfig, sha256_hex};
use crate::store::{Claim, CommitMetrics, Creation, Feeds, GroupCommitter, SharedStore};
use drive::drive_registered;
use serde_json::Value;
use state::Runtime;
use state::{CancelState, Inner};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Settings of an engine node.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub runtime: RuntimeConfig,
    /// Linear memory limit of one invocation, bytes.
    pub memory_limit_bytes: usize,
    /// CPU deadline of a step attempt unless its options say otherwise.
    pub step_timeout: Duration,
    /// How long a worker holding a task may go without a heartbeat before
    /// its attempt fails (and is retried by the step's retry policy).
    pub worker_heartbeat: Duration,
    /// A wait inside a worker step (its sleep) longer than this hands the
    /// task back until the wait ends, instead of holding the worker's
    /// slot; shorter ones stay in the worker. The journal is the same.
    pub worker_hold: Duration,
    /// Whether external workers can reach this engine (`serve`); without
    /// (`run`), a step on a worker queue fails at once with `denied`
    /// instead of waiting for a worker that cannot come.
    pub serves_workers: bool,
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
    /// Opens tenants' secrets (sealed at rest; see [`crate::secrets`]).
    /// Without it, a sealed secret fails the execution that reads it
    /// with an error that says to give one.
    pub master_key: Option<std::sync::Arc<crate::secrets::MasterKey>>,
    /// Replays journals and does nothing new (see [`Engine::replay_check`]):
    /// the first call past an invocation's journal, a step attempt or a
    /// worker task to start, stops it as a hibernation would.
    pub replay_only: bool,
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
            worker_heartbeat: Duration::from_secs(30),
            worker_hold: Duration::from_secs(2),
            serves_workers: true,
            workflow_timeout: Duration::from_secs(30),
            hibernate_after: Duration::from_secs(2),
            lease: Duration::from_secs(5),
            tick: Duration::from_millis(50),
            max_running: 512,
            quotas: DEFAULT_QUOTAS,
            engine_retry: Duration::from_secs(1),
            master_key: None,
            replay_only: false,
        }
    }
}

/// JSON text from a guest as a value (kept as a string if it is not JSON).
pub fn parse_payload(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// A Cerebelum engine node: runs executions from a [`crate::store::Store`].
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
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

pub use crate::util::new_id;

impl Engine {
    /// A node on `store`. Must be called inside a tokio runtime.
    pub fn new(store: SharedStore, config: EngineConfig, clock: SharedClock) -> Result<Self> {
        let runtime = Arc::new(Runtime::new(&config.runtime)?);
        Self::on_runtime(store, config, clock, runtime)
    }

    /// A node on `store` that runs its guests on `runtime` (another
    /// node's: its compiled packages and memory budget are shared).
    fn on_runtime(
        store: SharedStore,
        config: EngineConfig,
        clock: SharedClock,
        runtime: Arc<Runtime>,
    ) -> Result<Self> {
        let feeds = Feeds::new(store.clone());
        let node = crate::metrics::metrics();
        let observed = CommitMetrics {
            batch: node.journal_commit_batch.clone(),
            seconds: node.journal_commit_seconds.clone(),
        };
        let committer =
            GroupCommitter::start(store.clone(), clock.clone(), feeds.clone(), observed)?;
        let inner = Arc::new(Inner {
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
            tasks: worker::TaskSignals::default(),
            idle_steps: Arc::default(),
        });
        inner
            .feeds
            .count_reads(crate::metrics::metrics().feed_reads.clone());
        let node = Arc::downgrade(&inner);
        inner.feeds.driven_here(move |id| {
            node.upgrade().is_some_and(|inner| {
                inner
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains_key(id)
            })
        });
        Ok(Self { inner })
    }

    pub fn store(&self) -> &SharedStore {
        &self.inner.store
    }

    /// The node's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The engine's clock.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// The engine's clock, ms since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.inner.now_ms()
    }

    /// Whether uploading or running the package `bytes` compiles it first
    /// (it is in no cache yet).
    pub fn needs_compiling(&self, bytes: &[u8]) -> bool {
        self.inner.runtime.needs_compiling(&sha256_hex(bytes))
    }

    /// Validates and stores a package of `tenant`. The same bytes under the
    /// same name return the existing version; under another name they are
    /// another package (the bytes are stored once).
    pub async fn upload(&self, tenant: &str, name: &str, bytes: Vec<u8>) -> Result<PackageRecord> {
        check_package_name(name)?;
        let sha = sha256_hex(&bytes);
        let package = self.inner.runtime.validate(&sha, bytes.clone()).await?;
        self.inner
            .store
            .catalog()
            .put_package(
                tenant,
                name,
                &sha,
                &bytes,
                &package.info,
                self.inner.now_ms(),
            )
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
        self.start_package(&package, workflow, input, idempotency_key, None)
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
        worker_queue: Option<String>,
    ) -> Result<(ExecutionRecord, bool)> {
        let input: Value = serde_json::from_str(input).map_err(|e| {
            Error::InvalidInput(format!(
                "the input is not valid JSON ({}); pass e.g. --input '{{\"name\": \"web-1\"}}'",
                crate::util::json_error(&e)
            ))
        })?;
        let sha256 = package.sha256.as_str();
        self.admit_start(&package.tenant).await?;
        match self.inner.runtime.loaded(sha256) {
            Some(loaded) => loaded.info.check_workflow(workflow)?,
            None => package.info.check_workflow(workflow)?,
        }
        let new = NewExecution {
            id: new_id("ex"),
            tenant: package.tenant.clone(),
            package_name: package.name.clone(),
            package_version: package.version,
            package_sha256: sha256.to_owned(),
            workflow: workflow.to_owned(),
            input,
            idempotency_key,
            worker_queue,
            continued_from: None,
            parent_id: None,
            detached: false,
        };
        let (record, fresh) = create(&self.inner, new, package).await?;
        if fresh {
            crate::metrics::metrics()
                .executions_started
                .get_or_create(&crate::metrics::Metrics::package(
                    &record.tenant,
                    &record.package_name,
                ))
                .inc();
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
        let package = self.inner.store.catalog().package(tenant, sha256).await?;
        self.inner
            .packages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, package.clone());
        Ok(package)
    }

    /// Runs the scheduler until `shutdown` resolves.
    pub async fn serve(&self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        scheduler::run(self.inner.clone(), shutdown).await
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

    /// Makes this node's scheduler look for due executions now, not at its
    /// next tick: something this process did made one due (a signal, an
    /// approval, a cancel, a resume). Other nodes learn of it from the
    /// database (PostgreSQL `NOTIFY`) or their tick.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Tells the execution `record` names, if it runs on this node, what an
    /// operator asked of it through this process (a cancel, a pause or a
    /// resume) now, instead of at the next lease renewal.
    pub fn operator_changed(&self, record: &ExecutionRecord) {
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = running.get(&record.id) {
            if record.cancel_requested {
                c.request();
            }
            c.set_paused(record.paused);
        }
    }

    /// In-process wake-ups of the worker task queue (see [`TaskSignals`]).
    pub fn task_signals(&self) -> &TaskSignals {
        &self.inner.tasks
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
            let record = self.inner.store.executions().execution(id).await?;
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

/// Creates the execution `new` of `package` in the group commit (with the
/// journal writes of other executions) and, if this node has room, drives
/// it here at once: it is created claimed by this node, so no claim round
/// trip comes before its first line. Without room it is created pending,
/// for whichever node claims it first. Starts through the API and
/// continue-as-new come this way; a child is created the same way, in its
/// parent's commit (`calls::child`). Also tells whether the execution is
/// new (`false`: its idempotency key returned the earlier execution that
/// has it).
pub(crate) async fn create(
    inner: &Arc<Inner>,
    new: NewExecution,
    package: &PackageRecord,
) -> Result<(ExecutionRecord, bool)> {
    let id = new.id.clone();
    let slot = Slot::reserve(inner, &id);
    let now = inner.now_ms();
    // A key taken before returns the execution that has it.
    let creation = slot.creation(inner, new, now);
    let record = creation.record(package, now);
    let created = match inner.committer.create(creation).await {
        Ok(()) => Ok(record),
        Err(Error::KeyTaken(holder)) => inner.store.executions().execution(&holder).await,
        Err(e) => Err(e),
    };
    match created {
        Ok(record) if record.id == id => {
            slot.start(inner, record.clone());
            Ok((record, true))
        }
        other => {
            slot.release(inner);
            inner.wake.notify_one();
            other.map(|record| (record, false))
        }
    }
}

/// Room this node keeps to drive a new execution at once: reserved before
/// its creation (which then makes it claimed by this node), used or given
/// back after.
pub(crate) struct Slot {
    id: String,
    /// `None`: no room; the execution is created pending.
    cancel: Option<Arc<CancelState>>,
}

impl Slot {
    /// Reserves room for the new execution `id`, if this node serves and
    /// drives fewer than `max_running`.
    pub(crate) fn reserve(inner: &Inner, id: &str) -> Self {
        let mut running = inner.running.lock().unwrap_or_else(|p| p.into_inner());
        let room = inner.serving.load(Ordering::SeqCst) && running.len() < inner.config.max_running;
        let cancel = room.then(|| {
            let cancel = Arc::new(CancelState::default());
            running.insert(id.to_owned(), cancel.clone());
            cancel
        });
        Self {
            id: id.to_owned(),
            cancel,
        }
    }

    /// The creation of `new`: claimed by this node (with a lease from
    /// `now`) if it has room, else pending.
    pub(crate) fn creation(&self, inner: &Inner, new: NewExecution, now: i64) -> Creation {
        let lease_until = now + inner.config.lease.as_millis() as i64;
        Creation {
            new,
            owner: self
                .cancel
                .is_some()
                .then(|| (inner.node_id.clone(), lease_until)),
        }
    }

    /// The execution was created (durably): drive it here if it is ours,
    /// else tell the scheduler a pending one is due.
    pub(crate) fn start(self, inner: &Arc<Inner>, record: ExecutionRecord) {
        let Some(cancel) = self.cancel else {
            inner.wake.notify_one();
            return;
        };
        let claim = Claim {
            execution_id: self.id,
            epoch: record.epoch,
            signals: 0,
            resumed: false,
            late_ms: None,
            taken_over: false,
        };
        tokio::spawn(drive_registered(inner.clone(), claim, cancel, Some(record)));
    }

    /// The execution was not created (by this creation): give the room back.
    pub(crate) fn release(self, inner: &Inner) {
        if self.cancel.is_some() {
            inner
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.id);
        }
    }
}
