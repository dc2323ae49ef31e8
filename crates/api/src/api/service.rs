//! The operations of the API, each scoped to one tenant. The gRPC server
//! calls them for the tenant of the caller's key; local CLI commands call
//! them for the tenant `default`. Isolation lives here, in one place:
//! every lookup of an execution goes through [`Api::owned`], which answers
//! NOT_FOUND for another tenant's execution exactly as for a missing one.

use super::audit::Actor;
use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::executor::{Engine, ReplayChecker, ReplayReport, check_package_name};
use crate::journal::Entry;
use crate::model::{
    ApprovalRecord, CheckedExecution, Decision, ExecutionRecord, ListFilter, PackageCheck,
    PackageRecord, Quotas, SignalRecord, Status, StepCallRecord, TaskRecord, TaskStatus,
    TenantRecord, UpgradeResult, check_queue_name,
};
use crate::store::{Feeds, Follower, NewSignal, PendingUpgrade, SharedStore, execution_not_found};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracing::warn;

/// What [`Api::replay`] replays an execution against.
pub enum ReplayTarget {
    /// The execution's own package version.
    Own,
    /// A component, not stored.
    Component(Vec<u8>),
    /// A version of the execution's package.
    Version(i64),
}

/// What [`Api::check_package`] checks: a component not stored (against
/// the open executions of every version of its package), or a stored
/// version (against those of the versions before it).
pub enum CheckTarget {
    Component(Vec<u8>),
    Version(i64),
}

/// What [`Api::upgrade`] upgrades: one execution, or every open one of a
/// package version.
pub enum UpgradeTarget {
    Execution(String),
    Package { name: String, from: i64 },
}

/// How many replays of a package check run side by side.
const CHECKS_IN_FLIGHT: usize = 4;

pub use crate::model::DEFAULT_QUOTAS;
/// One event of [`Api::watch`].
pub use crate::store::FeedEvent as WatchEvent;

/// Most executions one page of a listing holds.
pub const MAX_PAGE: i64 = 1000;

/// Longest name a request may carry, bytes: packages, workflows,
/// approval keys, idempotency keys, page tokens.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest execution id a request may carry, bytes (ids are 36).
pub const MAX_ID_BYTES: usize = 128;

/// Most signals an execution may hold that it has not taken yet.
pub const MAX_BUFFERED_SIGNALS: i64 = 1000;

/// A queue no worker has polled for this long is called out in
/// [`queue_note`]: a live worker polls again as soon as each long poll
/// (20 s at most) ends.
pub const UNPOLLED_AFTER_MS: i64 = 60_000;

/// What a step on a worker queue waits for, as `status`, `watch` and the
/// console show it after "waiting for": the worker that runs it, or a
/// worker of its queue — saying so when none has polled the queue for
/// [`UNPOLLED_AFTER_MS`] (`last_polled_ms`: the latest poll of any worker
/// of the queue, if one ever did).
pub fn queue_note(task: &TaskRecord, last_polled_ms: Option<i64>, now_ms: i64) -> String {
    let waited = |since: i64| format!("{:.1} s", (now_ms - since).max(0) as f64 / 1000.0);
    if let (TaskStatus::Claimed, Some(worker)) = (task.status, &task.worker) {
        let since = task.claimed_at_ms.unwrap_or(task.created_at_ms);
        let progress = task.progress.as_ref().map_or(String::new(), |p| {
            let percent = p.get("percent").and_then(Value::as_i64);
            let message = p.get("message").and_then(Value::as_str).unwrap_or("");
            match percent {
                Some(percent) => format!(" — {percent}% {message}").trim_end().to_owned(),
                None if !message.is_empty() => format!(" — {message}"),
                None => String::new(),
            }
        });
        return format!(
            "step '{}' on worker '{worker}' (for {}){progress}",
            task.step,
            waited(since)
        );
    }
    let queue = &task.queue;
    let line = format!(
        "a worker on queue '{queue}' (for {})",
        waited(task.created_at_ms)
    );
    match last_polled_ms {
        None => format!("{line} — no worker has polled '{queue}' yet"),
        Some(at) if now_ms - at > UNPOLLED_AFTER_MS => format!(
            "{line} — no worker has polled '{queue}' for {}",
            crate::util::duration(now_ms - at)
        ),
        Some(_) => line,
    }
}

/// What a worker step handed back until later waits for (`call`: the
/// last durable call it recorded), as `status`, `watch` and the console
/// show it after "waiting for": its sleep, an approval or a signal.
pub fn step_wait_note(task: &TaskRecord, call: &StepCallRecord) -> String {
    let args: Value = serde_json::from_str(&call.args).unwrap_or(Value::Null);
    let named = |field: &str| {
        args.get(field)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    let step = format!("step '{}' (worker queue '{}')", task.step, task.queue);
    match (call.kind.as_str(), task.ready_at_ms) {
        ("approval", _) => format!("approval '{}' in {step}", named("key")),
        ("signal", _) => format!("signal '{}' in {step}", named("name")),
        (_, Some(due)) => format!("{step}, asleep until {}", crate::util::utc(due)),
        _ => step,
    }
}

/// Where an execution stands, from its journal: a line per call that
/// waits and has no result yet (`signal 'dns'`, `approval 'go'`, `sleep
/// until 2026-11-25T17:00:00Z`, `step deploy`, `poll check`, `child deploy
/// ex_…`).
pub fn waiting_on(journal: &[Entry]) -> Vec<String> {
    use crate::journal::{Event, ShowContext};
    let mut open: std::collections::BTreeMap<i64, String> = Default::default();
    let mut names: HashMap<i64, String> = HashMap::new();
    for e in journal {
        match &e.event {
            Event::Call { call, .. } => {
                let shown = call.show(&ShowContext {
                    execution: "",
                    names: &names,
                });
                if let Some(waiting) = shown.waiting {
                    open.insert(e.seq, waiting);
                }
                if let Some(name) = shown.name {
                    names.insert(e.seq, name);
                }
            }
            Event::Result { call, .. } => {
                open.remove(call);
            }
            Event::Retried(_) => open.clear(),
            _ => {}
        }
    }
    open.into_values().collect()
}

/// The last state the execution published (`set-state`).
pub fn latest_state(journal: &[Entry]) -> Option<Value> {
    journal.iter().rev().find_map(|e| match &e.event {
        crate::journal::Event::Call {
            call: crate::journal::Call::SetState(s),
            ..
        } => Some(s.args.state.clone()),
        _ => None,
    })
}

/// Refuses `value` of request field `field` if it is longer than `max`
/// bytes, before anything is looked up or stored.
pub fn check_len(field: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::InvalidInput(format!(
            "{field} is {} bytes long; it may be at most {max} bytes",
            value.len()
        )));
    }
    Ok(())
}

/// A request to start an execution.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// Package name.
    pub package: String,
    /// The newest version if `None`.
    pub version: Option<i64>,
    pub workflow: String,
    /// JSON text; empty means `{}`.
    pub input: String,
    pub idempotency_key: Option<String>,
    /// Every step runs on this external worker queue.
    pub worker_queue: Option<String>,
}

/// Why [`Api::upgrade`] did not move an execution now.
#[derive(Debug)]
enum Refused {
    /// It runs: it moves at its next hibernation (if it replays then).
    Running,
    /// It does not move, for this reason.
    Because(String),
}

/// Asked upgrades [`Api::apply_due_upgrades`] settles per round.
const UPGRADES_PER_ROUND: i64 = 100;

/// The checkers of one round of [`Api::apply_due_upgrades`], by (tenant,
/// package, version), with the tenant and package records.
type UpgradeCheckers = HashMap<(String, String, i64), (TenantRecord, PackageRecord, ReplayChecker)>;

/// An execution with the approvals it waits for.
#[derive(Debug, Clone)]
pub struct ExecutionView {
    pub record: ExecutionRecord,
    pub pending_approvals: Vec<ApprovalRecord>,
    /// Where it stands: a line per open wait (see [`waiting_on`]).
    pub waiting_on: Vec<String>,
    /// The last value its code published with `set-state`.
    pub state: Option<Value>,
    /// Signals it received and has not taken yet, in order.
    pub buffered_signals: Vec<SignalRecord>,
    /// The version an upgrade asked while it ran moves it to when it next
    /// hibernates (see [`Api::upgrade`]).
    pub upgrade_to: Option<i64>,
    /// What it waits for on the node that answers, besides its journal
    /// (room in the node's guest memory budget).
    pub note: Option<String>,
}

/// A page of [`Api::list`].
#[derive(Debug, Clone)]
pub struct Page {
    pub executions: Vec<ExecutionRecord>,
    /// Pass back to get the next page; `None` on the last one.
    pub next: Option<String>,
    /// Pass back as `before` to get the page before this one (newer
    /// executions); `None` on the first.
    pub prev: Option<String>,
}

/// The API's operations, on an engine node ([`Api::new`]) or on the
/// database alone ([`Api::on_store`]: everything but uploads and starts,
/// which need a node to validate packages and drive executions; local
/// read commands use it, so they start no wasm runtime).
#[derive(Clone)]
pub struct Api {
    store: SharedStore,
    clock: SharedClock,
    feeds: Feeds,
    /// The node it runs on, if any.
    node: Option<Engine>,
    defaults: Quotas,
    /// Starts in flight per tenant, counted against its open-executions
    /// quota until their execution is stored (and counted by the store).
    starting: Arc<Mutex<HashMap<String, i64>>>,
    /// When this node last stored that a worker (tenant, id) was seen.
    pub workers_seen: Arc<Mutex<HashMap<(String, String), i64>>>,
}

/// Releases a start's reservation when dropped.
struct Reservation<'a> {
    api: &'a Api,
    tenant: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut starting = self.api.starting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = starting.get_mut(&self.tenant) {
            *n -= 1;
            if *n <= 0 {
                starting.remove(&self.tenant);
            }
        }
    }
}

fn mib(bytes: i64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{bytes} bytes")
    }
}

impl Api {
    /// The API on `engine`; tenants without quotas of their own get the
    /// engine's defaults ([`crate::EngineConfig::quotas`]).
    pub fn new(engine: Engine) -> Self {
        Self {
            store: engine.store().clone(),
            clock: engine.clock().clone(),
            feeds: engine.feeds().clone(),
            defaults: engine.config().quotas,
            node: Some(engine),
            starting: Arc::default(),
            workers_seen: Arc::default(),
        }
    }

    /// The API on `store` alone, with the built-in default quotas: it
    /// reads, decides, cancels, retries and follows executions, and
    /// refuses uploads and starts.
    pub fn on_store(store: SharedStore, clock: SharedClock) -> Self {
        Self {
            feeds: Feeds::new(store.clone()),
            store,
            clock,
            node: None,
            defaults: DEFAULT_QUOTAS,
            starting: Arc::default(),
            workers_seen: Arc::default(),
        }
    }

    /// Wakes this node's scheduler, if the API runs on one: the execution
    /// it just made due runs now instead of at the next tick.
    fn wake_node(&self) {
        if let Some(node) = &self.node {
            node.wake();
        }
    }

    /// [`Api::wake_node`], and tells the execution, if it runs on this
    /// node, of an operator's cancel, pause or resume at once.
    fn tell_node(&self, record: &ExecutionRecord) {
        self.wake_node();
        if let Some(node) = &self.node {
            node.operator_changed(record);
        }
    }

    /// The engine node this API runs on, or an error for an API on the
    /// store alone.
    pub fn node(&self, what: &str) -> Result<&Engine> {
        self.node.as_ref().ok_or_else(|| {
            Error::Runtime(format!(
                "{what} needs an engine node; this API was opened on the database alone"
            ))
        })
    }

    /// The master key that seals secrets on this node, if it has one.
    pub fn master_key(&self) -> Option<Arc<crate::secrets::MasterKey>> {
        self.node
            .as_ref()
            .and_then(|n| n.config().master_key.clone())
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The quotas that apply to `tenant`.
    pub fn quotas(&self, tenant: &TenantRecord) -> Quotas {
        tenant.quotas.or(self.defaults)
    }

    /// Execution `id` if it belongs to `tenant`; NOT_FOUND otherwise, with
    /// the very message of a missing one (nothing is revealed).
    pub async fn owned(&self, tenant: &TenantRecord, id: &str) -> Result<ExecutionRecord> {
        check_len("the execution id", id, MAX_ID_BYTES)?;
        match self.store.executions().execution(id).await {
            Ok(record) if record.tenant == tenant.name => Ok(record),
            Ok(_) => Err(execution_not_found(id)),
            Err(e) => Err(e),
        }
    }

    pub fn check_payload(&self, tenant: &TenantRecord, what: &str, len: usize) -> Result<()> {
        let limit = self.quotas(tenant).max_payload_bytes.unwrap_or(i64::MAX);
        if len as i64 > limit {
            return Err(Error::QuotaExceeded(format!(
                "{what} is {} but tenant '{}' may send at most {} (max payload size)",
                mib(len as i64),
                tenant.name,
                mib(limit)
            )));
        }
        Ok(())
    }

    /// Validates, compiles and stores a package.
    pub async fn upload(
        &self,
        tenant: &TenantRecord,
        name: &str,
        wasm: Vec<u8>,
    ) -> Result<PackageRecord> {
        check_len("the package name", name, MAX_NAME_BYTES)?;
        check_package_name(name)?;
        self.check_package_size(tenant, wasm.len())?;
        self.node("uploading a package")?
            .upload(&tenant.name, name, wasm)
            .await
    }

    fn check_package_size(&self, tenant: &TenantRecord, len: usize) -> Result<()> {
        let limit = self.quotas(tenant).max_package_bytes.unwrap_or(i64::MAX);
        if len as i64 > limit {
            return Err(Error::QuotaExceeded(format!(
                "the package is {} but tenant '{}' may upload at most {} (max package size)",
                mib(len as i64),
                tenant.name,
                mib(limit)
            )));
        }
        Ok(())
    }

    /// Replays execution `id` against `target` without side effects
    /// (see [`Engine::replay_check`]); the report, and the package name
    /// and version replayed against (version 0: a component not stored).
    pub async fn replay(
        &self,
        tenant: &TenantRecord,
        id: &str,
        target: ReplayTarget,
    ) -> Result<(ReplayReport, String, i64)> {
        let record = self.owned(tenant, id).await?;
        let catalog = self.store.catalog();
        let (version, bytes) = match target {
            ReplayTarget::Component(bytes) => {
                self.check_package_size(tenant, bytes.len())?;
                (0, bytes)
            }
            ReplayTarget::Own => (
                record.package_version,
                catalog.package_bytes(&record.package_sha256).await?,
            ),
            ReplayTarget::Version(version) => {
                let package = catalog
                    .find_package(&tenant.name, &record.package_name, Some(version))
                    .await?;
                (version, catalog.package_bytes(&package.sha256).await?)
            }
        };
        let report = self
            .node("replaying an execution")?
            .replay_check(&record, &record.package_name, bytes)
            .await?;
        Ok((report, record.package_name, version))
    }

    /// Validates, compiles and stores a package, after replaying the open
    /// executions of its earlier versions against it (all, or a `sample`
    /// of them). With `require_compatible`, refuses it (stores nothing) if
    /// any of them would diverge or could not be checked.
    pub async fn upload_checked(
        &self,
        tenant: &TenantRecord,
        name: &str,
        wasm: Vec<u8>,
        sample: Option<i64>,
        require_compatible: bool,
    ) -> Result<(PackageRecord, PackageCheck)> {
        // The check refuses a bad name or an oversized package first.
        let mut check = self
            .check_package(tenant, name, CheckTarget::Component(wasm.clone()), sample)
            .await?;
        if require_compatible && !check.all_compatible() {
            let mut message = format!(
                "the package was not stored (--require-compatible): {}",
                check.summary()
            );
            for e in check.diverging.iter().chain(&check.unchecked).take(5) {
                message += &format!("; {} (v{}): {}", e.id, e.version, e.message);
            }
            return Err(Error::Conflict(message));
        }
        let record = self.upload(tenant, name, wasm).await?;
        check.version = record.version;
        Ok((record, check))
    }

    /// Replays the open executions of package `name`'s earlier versions
    /// (all, or `sample` of them spread over them oldest to newest)
    /// against `target`, without side effects: which would go on
    /// unchanged on the new code, and where the others would diverge.
    pub async fn check_package(
        &self,
        tenant: &TenantRecord,
        name: &str,
        target: CheckTarget,
        sample: Option<i64>,
    ) -> Result<PackageCheck> {
        let started = std::time::Instant::now();
        check_len("the package name", name, MAX_NAME_BYTES)?;
        if let Some(n) = sample.filter(|n| *n < 1) {
            return Err(Error::InvalidInput(format!(
                "the sample is {n}; pass at least 1, or no sample to check every open execution"
            )));
        }
        let catalog = self.store.catalog();
        let (version, bytes) = match target {
            CheckTarget::Component(bytes) => {
                check_package_name(name)?;
                self.check_package_size(tenant, bytes.len())?;
                (0, bytes)
            }
            CheckTarget::Version(version) => {
                let package = catalog
                    .find_package(&tenant.name, name, Some(version))
                    .await?;
                (version, catalog.package_bytes(&package.sha256).await?)
            }
        };
        let mut open = self.open_executions(tenant, name).await?;
        open.retain(|r| version == 0 || r.package_version < version);
        let total = open.len();
        if let Some(n) = sample.map(|n| n as usize).filter(|n| *n < total) {
            // Spread over the open executions, oldest to newest.
            open = (0..n).map(|i| open[i * total / n].clone()).collect();
        }
        let checker = Arc::new(
            self.node("checking a package")?
                .replay_checker(&tenant.name, name, bytes)
                .await?,
        );
        let mut check = PackageCheck {
            name: name.to_owned(),
            version,
            sha256: checker.sha256().to_owned(),
            open: total as i64,
            checked: open.len() as i64,
            ..PackageCheck::default()
        };
        let open = Arc::new(open);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut replays = tokio::task::JoinSet::new();
        for _ in 0..CHECKS_IN_FLIGHT.min(open.len()) {
            let (checker, open, next) = (checker.clone(), open.clone(), next.clone());
            replays.spawn(async move {
                let mut found = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(record) = open.get(i) else {
                        return found;
                    };
                    found.push((i, checker.check(record).await));
                }
            });
        }
        while let Some(found) = replays.join_next().await {
            let found =
                found.map_err(|e| Error::Runtime(format!("a replay check panicked: {e}")))?;
            for (i, report) in found {
                let record = &open[i];
                let about = |message: String, entries: i64| CheckedExecution {
                    id: record.id.clone(),
                    version: record.package_version,
                    entries,
                    message,
                };
                match report {
                    Ok(r) => match r.divergence {
                        Some(d) => check.diverging.push(about(d, r.entries)),
                        None => check.compatible += 1,
                    },
                    Err(e) => check.unchecked.push(about(e.to_string(), 0)),
                }
            }
        }
        check.diverging.sort_by(|a, b| a.id.cmp(&b.id));
        check.unchecked.sort_by(|a, b| a.id.cmp(&b.id));
        check.elapsed_ms = started.elapsed().as_millis() as i64;
        Ok(check)
    }

    /// The open (pending, running, waiting) executions of `tenant`'s
    /// package `name`, oldest first.
    async fn open_executions(
        &self,
        tenant: &TenantRecord,
        name: &str,
    ) -> Result<Vec<ExecutionRecord>> {
        let mut open = Vec::new();
        for status in [Status::Pending, Status::Running, Status::Waiting] {
            let mut filter = ListFilter {
                tenant: Some(tenant.name.clone()),
                status: Some(status),
                package: Some(name.to_owned()),
                limit: MAX_PAGE,
                ..ListFilter::default()
            };
            loop {
                let page = self.store.executions().list_executions(&filter).await?;
                let full = page.len() as i64 == MAX_PAGE;
                filter.after = page.last().map(|r| (r.created_at_ms, r.id.clone()));
                open.extend(page);
                if !full {
                    break;
                }
            }
        }
        open.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(open)
    }

    /// Moves hibernated executions to version `to` of their package when
    /// their journal replays cleanly against its code (an `upgraded`
    /// entry, audited); the others stay, each with why. `target`: one
    /// execution, or every open one of a package version.
    pub async fn upgrade(
        &self,
        tenant: &TenantRecord,
        actor: &Actor,
        target: UpgradeTarget,
        to: i64,
    ) -> Result<Vec<UpgradeResult>> {
        let (name, executions) = match target {
            UpgradeTarget::Execution(id) => {
                let record = self.owned(tenant, &id).await?;
                if record.package_version == to {
                    return Err(Error::InvalidInput(format!(
                        "execution {id} already runs on {} v{to}",
                        record.package_name
                    )));
                }
                (record.package_name.clone(), vec![record])
            }
            UpgradeTarget::Package { name, from } => {
                check_len("the package name", &name, MAX_NAME_BYTES)?;
                if from >= to {
                    return Err(Error::InvalidInput(format!(
                        "--from v{from} is not older than --to v{to}: an upgrade moves \
                         executions to a newer version"
                    )));
                }
                let catalog = self.store.catalog();
                catalog
                    .find_package(&tenant.name, &name, Some(from))
                    .await?;
                let mut open = self.open_executions(tenant, &name).await?;
                open.retain(|r| r.package_version == from);
                (name, open)
            }
        };
        let catalog = self.store.catalog();
        let package = catalog.find_package(&tenant.name, &name, Some(to)).await?;
        let bytes = catalog.package_bytes(&package.sha256).await?;
        let checker = self
            .node("upgrading executions")?
            .replay_checker(&tenant.name, &name, bytes)
            .await?;
        let mut results = Vec::with_capacity(executions.len());
        for record in executions {
            let mut result = UpgradeResult {
                id: record.id.clone(),
                from_version: record.package_version,
                to_version: to,
                ..UpgradeResult::default()
            };
            match self
                .upgrade_one(tenant, actor, &checker, &record, &package)
                .await
            {
                Ok(()) => result.upgraded = true,
                Err(Refused::Running) => {
                    self.request_upgrade(actor, &record, to).await?;
                    result.pending = true;
                    result.message = format!(
                        "it is {}: it moves to v{to} when it next waits, if its journal then \
                         replays cleanly against v{to}",
                        record.status
                    );
                }
                Err(Refused::Because(why)) => result.message = why,
            }
            results.push(result);
        }
        Ok(results)
    }

    /// Keeps the upgrade of running execution `record` to version `to`
    /// for when it hibernates ([`Api::apply_due_upgrades`]); audited.
    async fn request_upgrade(
        &self,
        actor: &Actor,
        record: &ExecutionRecord,
        to: i64,
    ) -> Result<()> {
        let now = self.now_ms();
        self.store
            .executions()
            .request_upgrade(&PendingUpgrade {
                execution_id: record.id.clone(),
                to_version: to,
                actor: actor.id.clone(),
                origin: actor.origin.clone(),
                requested_at_ms: now,
            })
            .await?;
        let detail = serde_json::json!({
            "from_version": record.package_version, "to_version": to, "pending": true,
        });
        actor
            .record(
                &self.store,
                now,
                &record.tenant,
                "execution.upgrade",
                &record.id,
                Some(detail),
            )
            .await
    }

    /// Applies the upgrades asked for executions that were running and now
    /// wait (see [`Api::upgrade`]): each whose journal replays cleanly
    /// against the version moves there, as `cerebelum upgrade` of a
    /// waiting execution would; one that would not is left where it is and
    /// the request dropped, with why in the audit log; one that ended
    /// first has its request dropped. How many requests were settled.
    pub async fn apply_due_upgrades(&self) -> Result<usize> {
        let executions = self.store.executions();
        let due = executions.due_upgrades(UPGRADES_PER_ROUND).await?;
        let mut settled = 0;
        // One checker per (tenant, package, version) a round needs: the
        // package's bytes read, hashed and stored in a scratch database once.
        let mut checkers = HashMap::new();
        for asked in due {
            let id = asked.execution_id.as_str();
            let actor = Actor {
                id: asked.actor.clone(),
                origin: asked.origin.clone(),
            };
            let record = match executions.execution(id).await {
                Ok(record) => record,
                Err(Error::NotFound(_)) => {
                    executions.drop_upgrade(id).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let refused = match self
                .apply_upgrade(&actor, &record, asked.to_version, &mut checkers)
                .await?
            {
                None => {
                    settled += 1;
                    continue;
                }
                Some(Refused::Running) => continue, // it woke meanwhile: its next hibernation
                Some(Refused::Because(why)) => why,
            };
            executions.drop_upgrade(id).await?;
            settled += 1;
            warn!(execution = %id, to_version = asked.to_version, reason = %refused, "an upgrade asked while it ran was not applied");
            let detail = serde_json::json!({
                "from_version": record.package_version, "to_version": asked.to_version,
                "refused": refused,
            });
            actor
                .record(
                    &self.store,
                    self.now_ms(),
                    &record.tenant,
                    "execution.upgrade",
                    id,
                    Some(detail),
                )
                .await?;
        }
        Ok(settled)
    }

    /// One asked upgrade of [`Api::apply_due_upgrades`]: None when it was
    /// applied (or needs nothing more).
    async fn apply_upgrade(
        &self,
        actor: &Actor,
        record: &ExecutionRecord,
        to: i64,
        checkers: &mut UpgradeCheckers,
    ) -> Result<Option<Refused>> {
        if record.status.is_terminal() {
            return Ok(Some(Refused::Because(format!(
                "it {} before it hibernated",
                record.status
            ))));
        }
        if record.package_version >= to {
            // Moved there already (by another node, or a direct upgrade).
            self.store.executions().drop_upgrade(&record.id).await?;
            return Ok(None);
        }
        let key = (record.tenant.clone(), record.package_name.clone(), to);
        if !checkers.contains_key(&key) {
            let catalog = self.store.catalog();
            let tenant = catalog.tenant(&record.tenant).await?;
            let package = match catalog
                .find_package(&tenant.name, &record.package_name, Some(to))
                .await
            {
                Ok(package) => package,
                Err(Error::NotFound(e)) => return Ok(Some(Refused::Because(e))),
                Err(e) => return Err(e),
            };
            let bytes = catalog.package_bytes(&package.sha256).await?;
            let checker = self
                .node("upgrading executions")?
                .replay_checker(&tenant.name, &record.package_name, bytes)
                .await?;
            checkers.insert(key.clone(), (tenant, package, checker));
        }
        let (tenant, package, checker) = &checkers[&key];
        match self
            .upgrade_one(tenant, actor, checker, record, package)
            .await
        {
            Ok(()) => Ok(None),
            Err(Refused::Because(why)) => {
                // Refused because it moved meanwhile (it woke, or its
                // journal grew): its next hibernation decides.
                let now = self.store.executions().execution(&record.id).await?;
                if now.status != Status::Waiting || now.updated_at_ms != record.updated_at_ms {
                    return Ok(Some(Refused::Running));
                }
                Ok(Some(Refused::Because(why)))
            }
            Err(refused) => Ok(Some(refused)),
        }
    }

    /// One execution of [`Api::upgrade`]: why it was not upgraded, if it
    /// was not.
    async fn upgrade_one(
        &self,
        tenant: &TenantRecord,
        actor: &Actor,
        checker: &ReplayChecker,
        record: &ExecutionRecord,
        to: &PackageRecord,
    ) -> std::result::Result<(), Refused> {
        let refused = |why: String| Refused::Because(why);
        if to.version < record.package_version {
            return Err(refused(format!(
                "it runs on v{}, newer than v{}",
                record.package_version, to.version
            )));
        }
        if record.status.is_terminal() {
            return Err(refused(format!("it is {}", record.status)));
        }
        // A running execution's journal so far is checked too: one that
        // diverges already is refused now, not at its hibernation.
        let report = checker
            .check(record)
            .await
            .map_err(|e| refused(e.to_string()))?;
        if let Some(divergence) = report.divergence {
            return Err(refused(format!("it would diverge: {divergence}")));
        }
        if record.status != Status::Waiting {
            return Err(Refused::Running);
        }
        if report.ended != Status::Waiting {
            return Err(refused(format!(
                "v{}'s code would end it ({}) where it waits now",
                to.version, report.ended
            )));
        }
        let now = self.now_ms();
        self.store
            .executions()
            .upgrade_execution(&record.id, record.package_version, report.entries, to, now)
            .await
            .map_err(|e| refused(e.to_string()))?;
        self.feeds.touched(&record.id);
        let detail =
            serde_json::json!({"from_version": record.package_version, "to_version": to.version});
        actor
            .record(
                &self.store,
                now,
                &tenant.name,
                "execution.upgrade",
                &record.id,
                Some(detail),
            )
            .await
            .map_err(|e| refused(format!("upgraded, but {e}")))
    }

    pub async fn list_packages(&self, tenant: &TenantRecord) -> Result<Vec<PackageRecord>> {
        self.store.catalog().list_packages(&tenant.name).await
    }

    pub async fn describe(
        &self,
        tenant: &TenantRecord,
        name: &str,
        version: Option<i64>,
    ) -> Result<PackageRecord> {
        check_len("the package name", name, MAX_NAME_BYTES)?;
        self.store
            .catalog()
            .find_package(&tenant.name, name, version)
            .await
    }

    /// Starts an execution; `true` if it is new (`false`: the idempotency
    /// key returned an earlier one).
    pub async fn start(
        &self,
        tenant: &TenantRecord,
        request: StartRequest,
    ) -> Result<(ExecutionRecord, bool)> {
        let input = if request.input.trim().is_empty() {
            "{}"
        } else {
            request.input.as_str()
        };
        check_len("the package name", &request.package, MAX_NAME_BYTES)?;
        check_len("the workflow name", &request.workflow, MAX_NAME_BYTES)?;
        if let Some(key) = &request.idempotency_key {
            check_len("the idempotency key", key, MAX_NAME_BYTES)?;
        }
        self.check_payload(tenant, "the input", input.len())?;
        if let Some(queue) = &request.worker_queue {
            check_queue_name(queue)?;
        }
        if request.idempotency_key.as_deref() == Some("") {
            return Err(Error::InvalidInput(
                "the idempotency key is empty; omit it or pass a non-empty key".into(),
            ));
        }
        let package = self
            .describe(tenant, &request.package, request.version)
            .await?;
        let node = self.node("starting an execution")?;
        let _reservation = self.reserve(tenant).await?;
        node.start_package(
            &package,
            &request.workflow,
            input,
            request.idempotency_key,
            request.worker_queue,
        )
        .await
    }

    /// Counts a start against the tenant's open-executions quota: the
    /// stored open executions plus the starts in flight on this node.
    async fn reserve(&self, tenant: &TenantRecord) -> Result<Reservation<'_>> {
        let limit = self.quotas(tenant).max_open_executions.unwrap_or(i64::MAX);
        let reservation = {
            let mut starting = self.starting.lock().unwrap_or_else(|p| p.into_inner());
            *starting.entry(tenant.name.clone()).or_default() += 1;
            Reservation {
                api: self,
                tenant: tenant.name.clone(),
            }
        };
        if limit == i64::MAX {
            return Ok(reservation);
        }
        let open = self
            .store()
            .executions()
            .count_open_executions(&tenant.name)
            .await?;
        let in_flight = *self
            .starting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&tenant.name)
            .unwrap_or(&1);
        // `in_flight` includes this start.
        if open + in_flight > limit {
            return Err(Error::QuotaExceeded(format!(
                "tenant '{}' has {open} open executions (pending, running or waiting) and may \
                 have at most {limit} (max open executions); wait for some to end or cancel them",
                tenant.name
            )));
        }
        Ok(reservation)
    }

    /// An execution with the approvals it waits for.
    pub async fn execution(&self, tenant: &TenantRecord, id: &str) -> Result<ExecutionView> {
        // The record first: the journal read after it holds at least what
        // the record's status says happened.
        let record = self.owned(tenant, id).await?;
        let journal = self.store.executions().journal(id, 0).await?;
        self.view(record, &journal).await
    }

    /// [`Api::execution`] with its journal as the caller has it (a live
    /// view that follows it), instead of reading it again. The record may
    /// be newer than that journal.
    pub async fn execution_with(
        &self,
        tenant: &TenantRecord,
        id: &str,
        journal: &[Entry],
    ) -> Result<ExecutionView> {
        let record = self.owned(tenant, id).await?;
        self.view(record, journal).await
    }

    async fn view(&self, record: ExecutionRecord, journal: &[Entry]) -> Result<ExecutionView> {
        let id = record.id.as_str();
        let pending_approvals = self
            .store()
            .executions()
            .approvals(id)
            .await?
            .into_iter()
            .filter(|a| a.status == "pending")
            .collect();
        let buffered_signals = self.store.executions().buffered_signals(id).await?;
        let upgrade_to = match record.status.is_terminal() {
            true => None,
            false => self.store.executions().pending_upgrade(id).await?,
        }
        .map(|u| u.to_version);
        // A step on a worker queue: what the tasks table says, on any node
        // and for as long as it waits (the node's note lasts only while
        // it drives the execution).
        let worker_note = match record.status.is_terminal() {
            true => None,
            false => self.worker_note(&record).await?,
        };
        Ok(ExecutionView {
            note: worker_note.or_else(|| self.node.as_ref().and_then(|node| node.note(id))),
            waiting_on: if record.status.is_terminal() {
                Vec::new()
            } else {
                waiting_on(journal)
            },
            state: latest_state(journal),
            record,
            pending_approvals,
            buffered_signals,
            upgrade_to,
        })
    }

    /// What execution `record`'s first unfinished worker task waits for:
    /// see [`queue_note`].
    async fn worker_note(&self, record: &ExecutionRecord) -> Result<Option<String>> {
        let tasks = self.store.tasks();
        let Some(task) = tasks.open_tasks(&record.id).await?.into_iter().next() else {
            return Ok(None);
        };
        let handed_back = task.status == TaskStatus::Queued
            && task.ready_at_ms.is_some_and(|at| at > self.now_ms());
        if handed_back && let Some(call) = tasks.step_calls(&task.id).await?.pop() {
            return Ok(Some(step_wait_note(&task, &call)));
        }
        let polled = match task.status {
            TaskStatus::Queued => tasks
                .list_workers(&record.tenant, 0)
                .await?
                .into_iter()
                .filter(|w| w.queue == task.queue)
                .map(|w| w.last_seen_at_ms)
                .max(),
            _ => None,
        };
        Ok(Some(queue_note(&task, polled, self.now_ms())))
    }

    /// Sends signal `signal.name` to execution `id` and wakes it; with a
    /// `signal_id` sent before, returns that signal (`false`: not new).
    pub async fn signal(
        &self,
        tenant: &TenantRecord,
        actor: &Actor,
        id: &str,
        signal: NewSignal,
    ) -> Result<(SignalRecord, bool)> {
        check_len("the signal name", &signal.name, MAX_NAME_BYTES)?;
        if signal.name.is_empty() {
            return Err(Error::InvalidInput(
                "the signal name is empty; name the signal the workflow waits for".into(),
            ));
        }
        if let Some(signal_id) = &signal.signal_id {
            check_len("the signal id", signal_id, MAX_NAME_BYTES)?;
        }
        self.check_payload(
            tenant,
            "the signal payload",
            signal.payload.to_string().len(),
        )?;
        self.owned(tenant, id).await?;
        let now = self.now_ms();
        let (record, created) = self
            .store
            .executions()
            .send_signal(id, &signal, MAX_BUFFERED_SIGNALS, now)
            .await?;
        self.wake_node();
        if created {
            let detail = serde_json::json!({ "name": signal.name, "seq": record.seq });
            actor
                .record(
                    &self.store,
                    now,
                    &tenant.name,
                    "execution.signal",
                    id,
                    Some(detail),
                )
                .await?;
        }
        Ok((record, created))
    }

    /// One page of the tenant's executions, newest first. `page_token` is
    /// the `next` of the page before.
    pub async fn list(
        &self,
        tenant: &TenantRecord,
        filter: ListFilter,
        page_token: Option<&str>,
    ) -> Result<Page> {
        self.list_of(Some(tenant), filter, page_token).await
    }

    /// [`Api::list`] of one tenant, or with `None` of every tenant (an
    /// operator's view; `filter.tenant` may then name one).
    pub async fn list_of(
        &self,
        tenant: Option<&TenantRecord>,
        filter: ListFilter,
        page_token: Option<&str>,
    ) -> Result<Page> {
        self.list_page(tenant, filter, page_token, None).await
    }

    /// [`Api::list_of`] with paging both ways: the page after `after`
    /// (older executions), or before `before` (newer), each a page token.
    pub async fn list_page(
        &self,
        tenant: Option<&TenantRecord>,
        filter: ListFilter,
        after: Option<&str>,
        before: Option<&str>,
    ) -> Result<Page> {
        let mut filter = self.checked_filter(tenant, filter)?;
        for token in [after, before].into_iter().flatten() {
            check_len("the page token", token, MAX_NAME_BYTES)?;
        }
        filter.limit = match filter.limit {
            n if n <= 0 => 50,
            n => n.min(MAX_PAGE),
        };
        let token = |t: Option<&str>| {
            t.filter(|t| !t.is_empty())
                .map(parse_page_token)
                .transpose()
        };
        filter.after = token(after)?;
        filter.before = token(before)?;
        let executions = self.store.executions().list_executions(&filter).await?;
        let token_of = |r: &ExecutionRecord| format!("{}.{}", r.created_at_ms, r.id);
        let full = executions.len() as i64 == filter.limit;
        let (next, prev) = match (&filter.before, &filter.after) {
            // Back from a later page: older ones follow this page's last.
            (Some(_), _) => (
                executions.last().map(token_of),
                executions.first().filter(|_| full).map(token_of),
            ),
            (None, Some(_)) => (
                executions.last().filter(|_| full).map(token_of),
                executions.first().map(token_of),
            ),
            (None, None) => (executions.last().filter(|_| full).map(token_of), None),
        };
        Ok(Page {
            executions,
            next,
            prev,
        })
    }

    /// How many executions `filter` finds in each status (see
    /// [`crate::store::Executions::count_by_status`]), for `tenant` (or
    /// every tenant's, an operator's view).
    pub async fn count_by_status(
        &self,
        tenant: Option<&TenantRecord>,
        filter: ListFilter,
    ) -> Result<Vec<(Status, i64)>> {
        let filter = self.checked_filter(tenant, filter)?;
        self.store.executions().count_by_status(&filter).await
    }

    /// `filter`, its fields checked, for `tenant`'s executions.
    fn checked_filter(
        &self,
        tenant: Option<&TenantRecord>,
        mut filter: ListFilter,
    ) -> Result<ListFilter> {
        for (field, value) in [
            ("the package filter", &filter.package),
            ("the workflow filter", &filter.workflow),
            ("the package filter", &filter.package_prefix),
            ("the workflow filter", &filter.workflow_prefix),
        ] {
            if let Some(value) = value {
                check_len(field, value, MAX_NAME_BYTES)?;
            }
        }
        if let Some((path, value)) = &filter.input_field {
            check_len("the input field's value", value, MAX_NAME_BYTES)?;
            let field = |f: &str| {
                !f.is_empty()
                    && f.len() <= MAX_NAME_BYTES
                    && f.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            };
            if path.is_empty() || path.len() > 8 || !path.iter().all(|f| field(f)) {
                return Err(Error::InvalidInput(format!(
                    "the input field `input.{}` is not a path of field names: write                      `input.name = web-1` or `input.server.name = web-1` (up to 8 names of                      letters, digits, '_' and '-')",
                    crate::util::shorten(&path.join("."), 80)
                )));
            }
        }
        if let Some(prefix) = &filter.id_prefix {
            check_len("the id filter", prefix, MAX_ID_BYTES)?;
            if !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(Error::InvalidInput(format!(
                    "the id filter {prefix:?} is not the start of an execution id: use letters, \
                     digits, '-' and '_' (e.g. `ex_3f9a`)"
                )));
            }
        }
        if let Some(tenant) = tenant {
            filter.tenant = Some(tenant.name.clone());
        }
        Ok(filter)
    }

    pub async fn journal(
        &self,
        tenant: &TenantRecord,
        id: &str,
        after_seq: i64,
    ) -> Result<Vec<Entry>> {
        self.owned(tenant, id).await?;
        self.store.executions().journal(id, after_seq).await
    }

    pub async fn decide(
        &self,
        tenant: &TenantRecord,
        actor: &Actor,
        id: &str,
        key: &str,
        decision: Decision,
    ) -> Result<ApprovalRecord> {
        check_len("the approval key", key, MAX_NAME_BYTES)?;
        match &decision {
            Decision::Approve(payload) => {
                self.check_payload(tenant, "the approval payload", payload.to_string().len())?
            }
            Decision::Reject(reason) => self.check_payload(tenant, "the reason", reason.len())?,
        }
        self.owned(tenant, id).await?;
        let now = self.now_ms();
        let action = match &decision {
            Decision::Approve(_) => "execution.approve",
            Decision::Reject(_) => "execution.reject",
        };
        let approval = self
            .store
            .executions()
            .decide_approval(id, key, &decision, now)
            .await?;
        self.wake_node();
        let detail = serde_json::json!({ "key": key });
        actor
            .record(&self.store, now, &tenant.name, action, id, Some(detail))
            .await?;
        Ok(approval)
    }

    pub async fn cancel(
        &self,
        tenant: &TenantRecord,
        actor: &Actor,
        id: &str,
    ) -> Result<ExecutionRecord> {
        self.owned(tenant, id).await?;
        let now = self.now_ms();
        let record = self.store.executions().request_cancel(id, now).await?;
        self.tell_node(&record);
        actor
            .record(&self.store, now, &tenant.name, "execution.cancel", id, None)
            .await?;
        Ok(record)
    }

    /// Pauses (`true`) or resumes execution `id`.
    pub async fn set_paused(
        &self,
        tenant: &TenantRecord,
        actor: &Actor,
        id: &str,
        paused: bool,
    ) -> Result<ExecutionRecord> {
        self.owned(tenant, id).await?;
        let now = self.now_ms();
        let record = self.store.executions().set_paused(id, paused, now).await?;
        self.tell_node(&record);
        let action = if paused {
            "execution.pause"
        } else {
            "execution.resume"
        };
        actor
            .record(&self.store, now, &tenant.name, action, id, None)
            .await?;
        Ok(record)
    }

    pub async fn retry(
        &self,
        tenant: &TenantRecord,
        actor: &Actor,
        id: &str,
    ) -> Result<ExecutionRecord> {
        self.owned(tenant, id).await?;
        let now = self.now_ms();
        let record = self.store.executions().retry_execution(id, now).await?;
        self.wake_node();
        // Its `retried` entry was written outside the group commit.
        self.feeds.touched(id);
        actor
            .record(&self.store, now, &tenant.name, "execution.retry", id, None)
            .await?;
        Ok(record)
    }

    /// Follows an execution: its journal entries after `after_seq` as they
    /// are written, then [`WatchEvent::Finished`] (see [`Follower::next`]).
    /// Every follower of one execution shares one reader of the store;
    /// dropping the follower stops following.
    pub async fn watch(&self, tenant: &TenantRecord, id: &str, after_seq: i64) -> Result<Follower> {
        self.owned(tenant, id).await?;
        Ok(self.feeds.follow(id, after_seq))
    }

    /// Follows execution `id` for its end alone: [`WatchEvent::Finished`]
    /// and nothing before it (a client waiting for the result). It costs
    /// the node nothing per step.
    pub async fn watch_end(&self, tenant: &TenantRecord, id: &str) -> Result<Follower> {
        // The ownership check's read of the record is the feed's first.
        self.feeds
            .follow_end_checked(id, self.owned(tenant, id))
            .await
    }

    /// Starts an execution ([`Api::start`]) and follows its end
    /// ([`Api::watch_end`]): the record as started, whether it is new, and
    /// the follower that hands out the final record.
    pub async fn run(
        &self,
        tenant: &TenantRecord,
        request: StartRequest,
    ) -> Result<(ExecutionRecord, bool, Follower)> {
        let (record, created) = self.start(tenant, request).await?;
        let follower = self.watch_end(tenant, &record.id).await?;
        Ok((record, created, follower))
    }

    /// Statuses `list` accepts, for error messages.
    pub fn parse_status(text: &str) -> Result<Status> {
        Status::parse(text).ok_or_else(|| {
            Error::InvalidInput(format!(
                "unknown status '{text}': use pending, running, waiting, completed, failed or \
                 cancelled"
            ))
        })
    }
}

fn parse_page_token(token: &str) -> Result<(i64, String)> {
    token
        .split_once('.')
        .and_then(|(at, id)| Some((at.parse().ok()?, id.to_owned())))
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "invalid page token {token:?}: pass the next_page_token of the previous page"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskId;

    fn task(status: TaskStatus, worker: Option<&str>) -> TaskRecord {
        TaskRecord {
            id: TaskId {
                execution_id: "ex_1".into(),
                seq: 1,
                attempt: 1,
            },
            tenant: "a".into(),
            queue: "devops".into(),
            step: "deploy".into(),
            status,
            created_at_ms: 1_000,
            worker: worker.map(str::to_owned),
            claimed_at_ms: worker.map(|_| 3_000),
            heartbeat_at_ms: None,
            deadline_at_ms: None,
            progress: None,
            outcome: None,
            ready_at_ms: None,
        }
    }

    #[test]
    fn a_queue_note_says_who_runs_the_step_or_who_has_not_polled() {
        let queued = task(TaskStatus::Queued, None);
        assert_eq!(
            queue_note(&queued, None, 4_000),
            "a worker on queue 'devops' (for 3.0 s) — no worker has polled 'devops' yet"
        );
        assert_eq!(
            queue_note(&queued, Some(3_900), 4_000),
            "a worker on queue 'devops' (for 3.0 s)"
        );
        let later = 1_000 + 6 * 60_000;
        assert_eq!(
            queue_note(&queued, Some(1_000), later),
            "a worker on queue 'devops' (for 360.0 s) — no worker has polled 'devops' for \
             6 min 0 s"
        );
        assert_eq!(
            queue_note(&task(TaskStatus::Claimed, Some("w-1")), None, 4_000),
            "step 'deploy' on worker 'w-1' (for 1.0 s)"
        );
        // The progress its worker's last heartbeat reported.
        let mut reporting = task(TaskStatus::Claimed, Some("w-1"));
        reporting.progress = Some(serde_json::json!({"percent": 60, "message": "copying"}));
        assert_eq!(
            queue_note(&reporting, None, 4_000),
            "step 'deploy' on worker 'w-1' (for 1.0 s) — 60% copying"
        );
        reporting.progress = Some(serde_json::json!({"message": "warming up"}));
        assert_eq!(
            queue_note(&reporting, None, 4_000),
            "step 'deploy' on worker 'w-1' (for 1.0 s) — warming up"
        );
    }

    #[test]
    fn a_worker_step_handed_back_says_what_it_waits_for() {
        let call = |kind: &str, args: &str| StepCallRecord {
            position: 1,
            kind: kind.into(),
            args: args.into(),
            answer: "{}".into(),
            at_ms: 0,
        };
        let mut handed_back = task(TaskStatus::Queued, None);
        handed_back.ready_at_ms = Some(1_795_700_000_000);
        assert_eq!(
            step_wait_note(&handed_back, &call("sleep", r#"{"duration_ms": 5000}"#)),
            "step 'deploy' (worker queue 'devops'), asleep until 2026-11-26T13:33:20Z"
        );
        assert_eq!(
            step_wait_note(&handed_back, &call("approval", r#"{"key": "ship"}"#)),
            "approval 'ship' in step 'deploy' (worker queue 'devops')"
        );
        assert_eq!(
            step_wait_note(&handed_back, &call("signal", r#"{"name": "go"}"#)),
            "signal 'go' in step 'deploy' (worker queue 'devops')"
        );
    }
}
