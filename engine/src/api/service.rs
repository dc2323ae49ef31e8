//! The operations of the API, each scoped to one tenant. The gRPC server
//! calls them for the tenant of the caller's key; local CLI commands call
//! them for the tenant `default`. Isolation lives here, in one place:
//! every lookup of an execution goes through [`Api::owned`], which answers
//! NOT_FOUND for another tenant's execution exactly as for a missing one.

use crate::error::{Error, Result};
use crate::executor::{Engine, check_package_name};
use crate::model::{
    ApprovalRecord, Decision, Entry, ExecutionRecord, ListFilter, PackageRecord, Quotas, Status,
    TenantRecord,
};
use crate::store::{SharedStore, execution_not_found};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

pub use crate::model::DEFAULT_QUOTAS;

/// Most executions one page of a listing holds.
pub const MAX_PAGE: i64 = 1000;

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
}

/// An execution with the approvals it waits for.
#[derive(Debug, Clone)]
pub struct ExecutionView {
    pub record: ExecutionRecord,
    pub pending_approvals: Vec<ApprovalRecord>,
}

/// One event of [`Api::watch`].
#[derive(Debug, Clone)]
pub enum WatchEvent {
    Entry(Entry),
    /// The last event: the execution ended.
    Finished(ExecutionRecord),
}

/// A page of [`Api::list`].
#[derive(Debug, Clone)]
pub struct Page {
    pub executions: Vec<ExecutionRecord>,
    /// Pass back to get the next page; `None` on the last one.
    pub next: Option<String>,
}

/// The API's operations on an engine node.
#[derive(Clone)]
pub struct Api {
    engine: Engine,
    defaults: Quotas,
    /// Starts in flight per tenant, counted against its open-executions
    /// quota until their execution is stored (and counted by the store).
    starting: Arc<Mutex<HashMap<String, i64>>>,
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
            defaults: engine.config().quotas,
            engine,
            starting: Arc::default(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn store(&self) -> &SharedStore {
        self.engine.store()
    }

    /// The quotas that apply to `tenant`.
    pub fn quotas(&self, tenant: &TenantRecord) -> Quotas {
        tenant.quotas.or(self.defaults)
    }

    /// Execution `id` if it belongs to `tenant`; NOT_FOUND otherwise, with
    /// the very message of a missing one (nothing is revealed).
    pub async fn owned(&self, tenant: &TenantRecord, id: &str) -> Result<ExecutionRecord> {
        match self.store().execution(id).await {
            Ok(record) if record.tenant == tenant.name => Ok(record),
            Ok(_) => Err(execution_not_found(id)),
            Err(e) => Err(e),
        }
    }

    fn check_payload(&self, tenant: &TenantRecord, what: &str, len: usize) -> Result<()> {
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
        check_package_name(name)?;
        let limit = self.quotas(tenant).max_package_bytes.unwrap_or(i64::MAX);
        if wasm.len() as i64 > limit {
            return Err(Error::QuotaExceeded(format!(
                "the package is {} but tenant '{}' may upload at most {} (max package size)",
                mib(wasm.len() as i64),
                tenant.name,
                mib(limit)
            )));
        }
        self.engine.upload(&tenant.name, name, wasm).await
    }

    pub async fn list_packages(&self, tenant: &TenantRecord) -> Result<Vec<PackageRecord>> {
        self.store().list_packages(&tenant.name).await
    }

    pub async fn describe(
        &self,
        tenant: &TenantRecord,
        name: &str,
        version: Option<i64>,
    ) -> Result<PackageRecord> {
        self.store().find_package(&tenant.name, name, version).await
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
        self.check_payload(tenant, "the input", input.len())?;
        if request.idempotency_key.as_deref() == Some("") {
            return Err(Error::InvalidInput(
                "the idempotency key is empty; omit it or pass a non-empty key".into(),
            ));
        }
        let package = self
            .describe(tenant, &request.package, request.version)
            .await?;
        let _reservation = self.reserve(tenant).await?;
        self.engine
            .start_execution(
                &tenant.name,
                &package.sha256,
                &request.workflow,
                input,
                request.idempotency_key,
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
        let open = self.store().count_open_executions(&tenant.name).await?;
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
        let record = self.owned(tenant, id).await?;
        let pending_approvals = self
            .store()
            .approvals(id)
            .await?
            .into_iter()
            .filter(|a| a.status == "pending")
            .collect();
        Ok(ExecutionView {
            record,
            pending_approvals,
        })
    }

    /// One page of the tenant's executions, newest first. `page_token` is
    /// the `next` of the page before.
    pub async fn list(
        &self,
        tenant: &TenantRecord,
        mut filter: ListFilter,
        page_token: Option<&str>,
    ) -> Result<Page> {
        filter.tenant = Some(tenant.name.clone());
        filter.limit = match filter.limit {
            n if n <= 0 => 50,
            n => n.min(MAX_PAGE),
        };
        filter.after = page_token
            .filter(|t| !t.is_empty())
            .map(parse_page_token)
            .transpose()?;
        let executions = self.store().list_executions(&filter).await?;
        let next = (executions.len() as i64 == filter.limit)
            .then(|| {
                executions
                    .last()
                    .map(|r| format!("{}.{}", r.created_at_ms, r.id))
            })
            .flatten();
        Ok(Page { executions, next })
    }

    pub async fn journal(
        &self,
        tenant: &TenantRecord,
        id: &str,
        after_seq: i64,
    ) -> Result<Vec<Entry>> {
        self.owned(tenant, id).await?;
        self.store().journal(id, after_seq).await
    }

    pub async fn decide(
        &self,
        tenant: &TenantRecord,
        id: &str,
        key: &str,
        decision: Decision,
    ) -> Result<ApprovalRecord> {
        if let Decision::Approve(payload) = &decision {
            self.check_payload(tenant, "the approval payload", payload.to_string().len())?;
        }
        self.owned(tenant, id).await?;
        let now = self.engine.now_ms();
        self.store().decide_approval(id, key, &decision, now).await
    }

    pub async fn cancel(&self, tenant: &TenantRecord, id: &str) -> Result<ExecutionRecord> {
        self.owned(tenant, id).await?;
        let now = self.engine.now_ms();
        self.store().request_cancel(id, now).await
    }

    pub async fn retry(&self, tenant: &TenantRecord, id: &str) -> Result<ExecutionRecord> {
        self.owned(tenant, id).await?;
        let now = self.engine.now_ms();
        self.store().retry_execution(id, now).await
    }

    /// Follows an execution: its journal entries after `after_seq` as they
    /// are written, then [`WatchEvent::Finished`]. The channel closes after
    /// the last event, on an error (sent as the last item), or when the
    /// receiver is dropped.
    pub async fn watch(
        &self,
        tenant: &TenantRecord,
        id: &str,
        after_seq: i64,
    ) -> Result<mpsc::Receiver<Result<WatchEvent>>> {
        self.owned(tenant, id).await?;
        let (tx, rx) = mpsc::channel(256);
        let store = self.store().clone();
        let mut finished = self.engine.finished();
        let id = id.to_owned();
        tokio::spawn(async move {
            let mut last_seq = after_seq;
            loop {
                // Read the status first: entries committed before it are then seen.
                let step = async {
                    let record = store.execution(&id).await?;
                    let entries = store.journal(&id, last_seq).await?;
                    Ok::<_, Error>((record, entries))
                };
                let (record, entries) = match step.await {
                    Ok(found) => found,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                for entry in entries {
                    last_seq = entry.seq;
                    if tx.send(Ok(WatchEvent::Entry(entry))).await.is_err() {
                        return;
                    }
                }
                if record.status.is_terminal() {
                    let _ = tx.send(Ok(WatchEvent::Finished(record))).await;
                    return;
                }
                // New entries are polled for; an execution this node
                // finishes is noticed at once.
                let wait = tokio::time::sleep(Duration::from_millis(50));
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        _ = &mut wait => break,
                        done = finished.recv() => match done {
                            Ok(done) if done != id => continue,
                            _ => break,
                        },
                        _ = tx.closed() => return,
                    }
                }
            }
        });
        Ok(rx)
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
