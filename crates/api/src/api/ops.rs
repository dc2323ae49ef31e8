//! [`Operations`]: what a client does with one tenant's packages and
//! executions, as one trait. The CLI talks only to it, whether its work
//! goes to this process's database ([`Local`], through the same [`Api`]
//! the server runs) or to a `cerebelum serve` over gRPC
//! ([`super::client::Remote`]). A new operation is written in [`Api`],
//! the gRPC service and the remote client; every command uses it the same
//! way, local or remote.
//!
//! ```no_run
//! # async fn demo(ops: &dyn cerebelum_api::api::Operations) -> cerebelum_types::Result<()> {
//! use cerebelum_api::api::service::StartRequest;
//! let (execution, _) = ops
//!     .start(StartRequest {
//!         package: "hello".into(),
//!         workflow: "hello".into(),
//!         input: r#"{"name":"web-1"}"#.into(),
//!         ..StartRequest::default()
//!     })
//!     .await?;
//! println!("{} is {}", execution.id, execution.status);
//! # Ok(()) }
//! ```

use super::audit::Actor;
use super::schedules::NewSchedule;
use super::service::{Api, ExecutionView, Page, StartRequest, WatchEvent};
use super::triggers::NewTrigger;
use crate::error::Result;
use crate::journal::Entry;
use crate::model::{
    ApprovalRecord, Decision, ExecutionRecord, ListFilter, PackageRecord, ScheduleRecord,
    SignalRecord, TenantRecord, TriggerRecord, WorkerRecord,
};
use crate::store::NewSignal;
use async_trait::async_trait;
use std::pin::Pin;
use tokio_stream::Stream;

/// The events of [`Operations::watch`], in order; the last is
/// [`WatchEvent::Finished`]. A stream that breaks before it (the server
/// went away) ends with a transient error ([`crate::Error::is_transient`]):
/// watch again after the last seq received.
pub type Events = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// What a client can do with its tenant's packages and executions. Every
/// operation is scoped to one tenant: another tenant's executions are
/// "not found", exactly as missing ones.
#[async_trait]
pub trait Operations: Send + Sync {
    /// Where the operations go, for messages: "the local database" or the
    /// server's URL.
    fn place(&self) -> String;

    /// Validates, compiles and stores a package under `name` (the same
    /// bytes under the same name return the existing version).
    async fn upload(&self, name: &str, wasm: Vec<u8>) -> Result<PackageRecord>;

    /// Every package version, by name then version.
    async fn packages(&self) -> Result<Vec<PackageRecord>>;

    /// Package `name`: that version, or the newest.
    async fn describe(&self, name: &str, version: Option<i64>) -> Result<PackageRecord>;

    /// Starts an execution; `true` if it is new (`false`: the idempotency
    /// key returned an earlier one).
    async fn start(&self, request: StartRequest) -> Result<(ExecutionRecord, bool)>;

    /// An execution, with the approvals it waits for.
    async fn execution(&self, id: &str) -> Result<ExecutionView>;

    /// One page of executions, newest first; `page_token` is the `next` of
    /// the page before.
    async fn list(&self, filter: ListFilter, page_token: Option<&str>) -> Result<Page>;

    /// Journal entries with `seq > after_seq`, in order.
    async fn journal(&self, id: &str, after_seq: i64) -> Result<Vec<Entry>>;

    /// Approves or rejects what execution `id` waits for under `key`.
    async fn decide(&self, id: &str, key: &str, decision: Decision) -> Result<ApprovalRecord>;

    /// Sends a signal to execution `id`; `true` if it is new (`false`: its
    /// signal id was sent before).
    async fn signal(&self, id: &str, signal: NewSignal) -> Result<(SignalRecord, bool)>;

    /// Requests cancellation: the execution's next suspension point
    /// returns a cancellation error to its code.
    async fn cancel(&self, id: &str) -> Result<ExecutionRecord>;

    /// Pauses (`true`: it runs no new invocation) or resumes execution `id`.
    async fn set_paused(&self, id: &str, paused: bool) -> Result<ExecutionRecord>;

    /// Runs a failed or cancelled execution again, keeping what it
    /// completed.
    async fn retry(&self, id: &str) -> Result<ExecutionRecord>;

    /// The tenant's external workers seen in the last minute, by queue.
    async fn workers(&self) -> Result<Vec<WorkerRecord>>;

    /// Follows an execution: its journal entries after `after_seq` as they
    /// are written, then [`WatchEvent::Finished`]. Dropping the stream
    /// stops following.
    async fn watch(&self, id: &str, after_seq: i64) -> Result<Events>;

    /// Creates a schedule (see [`super::schedules`]).
    async fn create_schedule(&self, new: NewSchedule) -> Result<ScheduleRecord>;

    /// The tenant's schedules, by name.
    async fn schedules(&self) -> Result<Vec<ScheduleRecord>>;

    /// Pauses (`true`) or resumes a schedule.
    async fn pause_schedule(&self, name: &str, paused: bool) -> Result<ScheduleRecord>;

    async fn delete_schedule(&self, name: &str) -> Result<()>;

    /// Starts a schedule's workflow now.
    async fn trigger_schedule(&self, name: &str) -> Result<(ExecutionRecord, bool)>;

    /// Creates an HTTP trigger (see [`super::triggers`]); without an HMAC
    /// secret, also its token.
    async fn create_trigger(&self, new: NewTrigger) -> Result<(TriggerRecord, Option<String>)>;

    async fn triggers(&self) -> Result<Vec<TriggerRecord>>;

    async fn delete_trigger(&self, name: &str) -> Result<()>;

    /// Operations on the same place over a new connection (after the
    /// server restarted); a local one is simply the same.
    async fn reconnect(&self) -> Result<Box<dyn Operations>>;
}

/// [`Operations`] on this process's database, as one tenant.
#[derive(Clone)]
pub struct Local {
    api: Api,
    tenant: TenantRecord,
}

impl Local {
    /// The operations of tenant `tenant` through `api`.
    pub async fn new(api: Api, tenant: &str) -> Result<Self> {
        let tenant = api.store().catalog().tenant(tenant).await?;
        Ok(Self { api, tenant })
    }
}

#[async_trait]
impl Operations for Local {
    fn place(&self) -> String {
        "the local database".into()
    }

    async fn upload(&self, name: &str, wasm: Vec<u8>) -> Result<PackageRecord> {
        self.api.upload(&self.tenant, name, wasm).await
    }

    async fn packages(&self) -> Result<Vec<PackageRecord>> {
        self.api.list_packages(&self.tenant).await
    }

    async fn describe(&self, name: &str, version: Option<i64>) -> Result<PackageRecord> {
        self.api.describe(&self.tenant, name, version).await
    }

    async fn start(&self, request: StartRequest) -> Result<(ExecutionRecord, bool)> {
        self.api.start(&self.tenant, request).await
    }

    async fn execution(&self, id: &str) -> Result<ExecutionView> {
        self.api.execution(&self.tenant, id).await
    }

    async fn list(&self, filter: ListFilter, page_token: Option<&str>) -> Result<Page> {
        self.api.list(&self.tenant, filter, page_token).await
    }

    async fn journal(&self, id: &str, after_seq: i64) -> Result<Vec<Entry>> {
        self.api.journal(&self.tenant, id, after_seq).await
    }

    async fn decide(&self, id: &str, key: &str, decision: Decision) -> Result<ApprovalRecord> {
        self.api
            .decide(&self.tenant, &Actor::cli(), id, key, decision)
            .await
    }

    async fn signal(&self, id: &str, signal: NewSignal) -> Result<(SignalRecord, bool)> {
        self.api
            .signal(&self.tenant, &Actor::cli(), id, signal)
            .await
    }

    async fn cancel(&self, id: &str) -> Result<ExecutionRecord> {
        self.api.cancel(&self.tenant, &Actor::cli(), id).await
    }

    async fn set_paused(&self, id: &str, paused: bool) -> Result<ExecutionRecord> {
        self.api
            .set_paused(&self.tenant, &Actor::cli(), id, paused)
            .await
    }

    async fn retry(&self, id: &str) -> Result<ExecutionRecord> {
        self.api.retry(&self.tenant, &Actor::cli(), id).await
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>> {
        self.api.list_workers(&self.tenant).await
    }

    async fn watch(&self, id: &str, after_seq: i64) -> Result<Events> {
        let mut follower = self.api.watch(&self.tenant, id, after_seq).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        // Follows while someone reads: the task ends when the stream is
        // dropped or the execution ends.
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    event = follower.next() => event,
                    () = tx.closed() => return,
                };
                let Some(event) = event else { return };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn create_schedule(&self, new: NewSchedule) -> Result<ScheduleRecord> {
        self.api
            .create_schedule(&self.tenant, &Actor::cli(), new)
            .await
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>> {
        self.api.schedules(&self.tenant).await
    }

    async fn pause_schedule(&self, name: &str, paused: bool) -> Result<ScheduleRecord> {
        self.api
            .pause_schedule(&self.tenant, &Actor::cli(), name, paused)
            .await
    }

    async fn delete_schedule(&self, name: &str) -> Result<()> {
        self.api
            .delete_schedule(&self.tenant, &Actor::cli(), name)
            .await
    }

    async fn trigger_schedule(&self, name: &str) -> Result<(ExecutionRecord, bool)> {
        self.api
            .trigger_schedule(&self.tenant, &Actor::cli(), name)
            .await
    }

    async fn create_trigger(&self, new: NewTrigger) -> Result<(TriggerRecord, Option<String>)> {
        self.api
            .create_trigger(&self.tenant, &Actor::cli(), new)
            .await
    }

    async fn triggers(&self) -> Result<Vec<TriggerRecord>> {
        self.api.triggers(&self.tenant).await
    }

    async fn delete_trigger(&self, name: &str) -> Result<()> {
        self.api
            .delete_trigger(&self.tenant, &Actor::cli(), name)
            .await
    }

    async fn reconnect(&self) -> Result<Box<dyn Operations>> {
        Ok(Box::new(self.clone()))
    }
}
